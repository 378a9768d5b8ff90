package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/monitor"
)

// Output forms of l4lb monitor's -o.
const (
	monitorText = "text"
	monitorJSON = "json"
)

// monitorConnectTimeout bounds the connection to the node and its answer's headers; the
// stream itself has no bound.
const monitorConnectTimeout = 10 * time.Second

type monitorOptions struct {
	vip, reason, src, typ string
	sample                uint32
	sampleSet             bool // --sample given (its 0 is an error, not "every one")
	output, pcapFile      string
	quiet                 bool
	count                 int
}

func newMonitorCmd(f *clientFlags) *cobra.Command {
	var o monitorOptions
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Watch the data plane's drops and forwarding decisions as they happen",
		Long: `monitor prints the events of the node's XDP program as they happen, one a line: each
packet it dropped, with the counter the drop counts in, and, while someone watches,
a sample of its forwarding decisions (a new flow, a packet of no known flow that is no
SYN, a flow moved because its backend left).

  15:04:05.000000 drop drop_deny tcp 198.51.100.7:40000 -> 203.0.113.10:80 vip=web backend=- len=74

-o json prints the events as the admin API sends them, one JSON object a line, with the
packet's first bytes in base64. -w writes them to a pcapng file as well (Wireshark and
tcpdump read it; each packet's comment says what the data plane did); -q then prints
nothing. Ctrl-C stops, and says how many events the node lost meanwhile.

The events carry packet bytes: monitor needs the admin token (--token-file).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.sampleSet = cmd.Flags().Changed("sample")
			return runMonitor(cmd.Context(), f, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.vip, "vip", "", "only events of this VIP (its name in the configuration)")
	fl.StringVar(&o.reason, "reason", "", "only events of this reason: a drop counter's name (drop_deny, ...) or new_flow, miss_non_syn, moved, sock_connect")
	fl.StringVar(&o.src, "src", "", "only events from this source prefix or address")
	fl.StringVar(&o.typ, "type", "", "only drops (drop) or only forwarding decisions (flow); both if not given")
	fl.Uint32Var(&o.sample, "sample", 0, "one forwarding decision in N (drops are never sampled)")
	// -o here is a line's form, not the table/json/yaml of the other commands.
	fl.StringVarP(&o.output, "output", "o", monitorText, "output: text (one line an event) or json (one object a line)")
	fl.StringVarP(&o.pcapFile, "write", "w", "", "also write the events to this pcapng file")
	fl.BoolVarP(&o.quiet, "quiet", "q", false, "with -w: print no events")
	fl.IntVarP(&o.count, "count", "c", 0, "stop after N events (0: until Ctrl-C)")
	return cmd
}

// filter checks the flags and makes the query the admin API takes.
func (o monitorOptions) filter() (url.Values, error) {
	switch {
	case o.output != monitorText && o.output != monitorJSON:
		return nil, fmt.Errorf("-o %q: want text or json", o.output)
	case o.quiet && o.pcapFile == "":
		return nil, errors.New("-q prints nothing, and without -w FILE nothing is written either")
	case o.count < 0:
		return nil, fmt.Errorf("-c %d: want a number of events, or 0 for no limit", o.count)
	}
	q := url.Values{}
	for k, v := range map[string]string{"vip": o.vip, "reason": o.reason, "src": o.src, "type": o.typ} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.sampleSet || o.sample != 0 {
		q.Set("sample", strconv.FormatUint(uint64(o.sample), 10))
	}
	// The node parses the same query; checking here says what is wrong before connecting,
	// in the flags' names (the query's parameters are named as the flags).
	if _, err := monitor.ParseFilter(q); err != nil {
		return nil, errors.New("--" + strings.TrimPrefix(err.Error(), monitor.ErrBadFilter.Error()+": "))
	}
	return q, nil
}

func runMonitor(ctx context.Context, f *clientFlags, o monitorOptions, stdout, stderr io.Writer) (err error) {
	q, err := o.filter()
	if err != nil {
		return err
	}
	if f.tokenFile == "" {
		return errors.New("monitor needs --token-file (or L4LB_TOKEN_FILE): its events carry packet bytes")
	}
	tok, err := admin.ReadToken(f.tokenFile)
	if err != nil {
		return err
	}
	before, haveBefore := recentLost(ctx, f)
	body, err := openMonitor(ctx, f.addr, tok, q)
	if err != nil {
		return err
	}
	defer body.Close()

	// The file is made once the node has taken the request: a refused one leaves none.
	var pw *monitor.PcapWriter
	if o.pcapFile != "" {
		fh, err := os.Create(o.pcapFile)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := fh.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("close %s: %w", o.pcapFile, cerr)
			}
		}()
		if pw, err = monitor.NewPcapWriter(fh); err != nil {
			return err
		}
		defer func() {
			if ferr := pw.Flush(); err == nil && ferr != nil {
				err = fmt.Errorf("write %s: %w", o.pcapFile, ferr)
			}
		}()
	}

	n := 0
	defer func() {
		// As tcpdump does, on stderr: what was seen, and what the node lost meanwhile.
		fmt.Fprintf(stderr, "%d events\n", n)
		if !haveBefore {
			return
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if after, ok := recentLost(sctx, f); ok {
			fmt.Fprintf(stderr, "lost on the node meanwhile: %d over the rate limit, %d to a full ring buffer, %d to slow watchers\n",
				after.RateLimited-before.RateLimited, after.RingFull-before.RingFull, after.SlowClient-before.SlowClient)
		}
	}()

	lines := bufio.NewScanner(body)
	lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	for o.count == 0 || n < o.count {
		if !lines.Scan() {
			if ctx.Err() != nil {
				return nil // Ctrl-C
			}
			if err := lines.Err(); err != nil {
				return fmt.Errorf("monitor stream: %w", err)
			}
			return errors.New("the node ended the monitor stream (it is stopping, or its monitor closed)")
		}
		line := lines.Bytes()
		if len(line) == 0 {
			continue // a heartbeat
		}
		var e monitor.Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("monitor stream: %w in %q", err, line)
		}
		e.Time = e.Time.Local()
		n++
		if pw != nil {
			if err := pw.Write(e); err != nil {
				return fmt.Errorf("write %s: %w", o.pcapFile, err)
			}
		}
		if !o.quiet {
			if o.output == monitorJSON {
				out.Write(line)
				out.WriteByte('\n')
			} else {
				out.WriteString(monitor.Line(e) + "\n")
			}
			// Line by line, as tcpdump -l: whoever reads us sees an event when it comes.
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// openMonitor starts GET /v1/monitor; a refusal is the API's message.
func openMonitor(ctx context.Context, addr, tok string, q url.Values) (io.ReadCloser, error) {
	u := "http://" + addr + "/v1/monitor"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/x-ndjson")
	client := &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: monitorConnectTimeout}).DialContext,
		ResponseHeaderTimeout: monitorConnectTimeout,
	}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin api: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return nil, errors.New(e.Error)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("admin api: %s: this node's l4lb has no monitor (a version before it?)", resp.Status)
	}
	return nil, fmt.Errorf("admin api: %s", resp.Status)
}

// recentLost reads the node's loss counters; false if it cannot.
func recentLost(ctx context.Context, f *clientFlags) (monitor.Lost, bool) {
	ctx, cancel := context.WithTimeout(ctx, monitorConnectTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+f.addr+"/v1/monitor/recent", nil)
	if err != nil {
		return monitor.Lost{}, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return monitor.Lost{}, false
	}
	defer resp.Body.Close()
	var v admin.RecentView
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil || !v.Available {
		return monitor.Lost{}, false
	}
	return v.Lost, true
}
