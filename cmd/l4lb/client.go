package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/daemon"
)

type clientFlags struct {
	addr, tokenFile, output string
}

func (f *clientFlags) register(cmd *cobra.Command) {
	def := os.Getenv("L4LB_ADMIN")
	if def == "" {
		def = "127.0.0.1:9100"
	}
	cmd.PersistentFlags().StringVar(&f.addr, "admin", def, "admin API address (env L4LB_ADMIN)")
	cmd.PersistentFlags().StringVar(&f.tokenFile, "token-file", os.Getenv("L4LB_TOKEN_FILE"), "bearer token file for changes (env L4LB_TOKEN_FILE)")
	cmd.PersistentFlags().StringVarP(&f.output, "output", "o", formatTable, "output: "+strings.Join(formats, ", "))
}

// print writes a response of the admin API: as JSON or YAML, or in table form by table.
func (f *clientFlags) print(w io.Writer, doc []byte, table func() error) error {
	if f.output == formatTable {
		return table()
	}
	return writeStructured(w, f.output, doc)
}

func (f *clientFlags) do(method, path string, body any) ([]byte, error) {
	return f.doTimeout(method, path, body, 10*time.Second)
}

// doTimeout calls the admin API: the bearer token for changes, the API's error message
// for a refused call.
func (f *clientFlags) doTimeout(method, path string, body any, timeout time.Duration) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+f.addr+path, rd)
	if err != nil {
		return nil, err
	}
	if method != http.MethodGet {
		if f.tokenFile == "" {
			return nil, fmt.Errorf("changes need --token-file (or L4LB_TOKEN_FILE)")
		}
		tok, err := admin.ReadToken(f.tokenFile)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin api: %w", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var e struct {
		Error string `json:"error"`
	}
	switch {
	case resp.StatusCode == http.StatusAccepted:
		// Saved but not in effect yet (drain, undrain, weight): not a success.
		err := fmt.Errorf("pending: the admin api answered %s", resp.Status)
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			err = fmt.Errorf("%w: %s", err, strings.TrimPrefix(e.Error, admin.ErrPending.Error()+": "))
		}
		return nil, err
	case resp.StatusCode >= 300:
		if json.Unmarshal(out, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s", e.Error)
		}
		return nil, fmt.Errorf("admin api: %s", resp.Status)
	}
	return out, nil
}

func (f *clientFlags) state() (daemon.View, []byte, error) {
	raw, err := f.do(http.MethodGet, "/v1/state", nil)
	if err != nil {
		return daemon.View{}, nil, err
	}
	var v daemon.View
	if err := json.Unmarshal(raw, &v); err != nil {
		return daemon.View{}, nil, fmt.Errorf("admin api: %w", err)
	}
	return v, raw, nil
}

func newStatusCmds(f *clientFlags) []*cobra.Command {
	show := func(use, short string, print func(w *tabwriter.Writer, v daemon.View)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				v, raw, err := f.state()
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), raw, func() error {
					w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
					print(w, v)
					return w.Flush()
				})
			},
		}
	}
	status := show("status", "Show the node: mode, interfaces, VIPs and backends", func(w *tabwriter.Writer, v daemon.View) {
		ifs := []string{}
		for k, m := range v.Interfaces {
			ifs = append(ifs, k+" ("+m+")")
		}
		fmt.Fprintf(w, "mode %s, interfaces %s, next hop %s, ready %v\n", v.Mode, strings.Join(ifs, ", "), nextHops(v), v.Ready)
		if v.ModeReason != "" {
			fmt.Fprintf(w, "mode chosen: %s\n", v.ModeReason)
		}
		fmt.Fprintf(w, "last apply %s (%.1f ms) %s\n", v.LastApply.At.Format(time.RFC3339), v.LastApply.DurationMS, v.LastApply.Error)
		if v.LastReload != nil {
			fmt.Fprintf(w, "last reload %s ok=%v %s\n", v.LastReload.At.Format(time.RFC3339), v.LastReload.OK, v.LastReload.Error)
		}
		printVIPs(w, v, true)
		printSocketLB(w, v)
		if len(v.IPVS) > 0 {
			printIPVS(w, v.IPVS)
		}
		if v.BGP != nil {
			printBGP(w, v.BGP)
		}
	})
	vips := show("vips", "List VIPs", func(w *tabwriter.Writer, v daemon.View) { printVIPs(w, v, false) })
	backends := show("backends", "List backends of every VIP", func(w *tabwriter.Writer, v daemon.View) {
		fmt.Fprintln(w, "VIP\tBACKEND\tID\tWEIGHT\tCONFIG\tHEALTH\tDRAINED\tPACKETS\tBYTES\tCHECK\tRTT\tLAST ERROR")
		var notes []string
		for _, vip := range v.VIPs {
			for _, b := range vip.Backends {
				p, by := backendTraffic(b)
				check, rtt, lastErr := checkColumns(b.Check)
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%s\t%v\t%s\t%s\t%s\t%s\t%s\n", vip.Name, b.Address, b.ID, b.Weight, b.ConfigWeight, upDown(b.Healthy), b.Drained, p, by, check, rtt, lastErr)
				if b.Check != nil && b.Check.ViaNote != "" && !slices.Contains(notes, vip.Name+": "+b.Check.ViaNote) {
					notes = append(notes, vip.Name+": "+b.Check.ViaNote)
				}
			}
		}
		nodeWideNote(w, v)
		for _, n := range notes {
			fmt.Fprintln(w, "via tunnel, checked direct: "+n)
		}
	})
	bgpCmd := show("bgp", "Show BGP sessions and announced prefixes", func(w *tabwriter.Writer, v daemon.View) {
		if v.BGP == nil {
			fmt.Fprintln(w, "bgp: not running (bgp.enabled is false, or the node is stopping)")
			return
		}
		printBGP(w, v.BGP)
	})
	return []*cobra.Command{status, vips, backends, bgpCmd}
}

func printBGP(w *tabwriter.Writer, b *daemon.BGPView) {
	fmt.Fprintln(w, "PEER	ASN	STATE	SINCE	ADVERTISED")
	for _, p := range b.Peers {
		since := "-"
		if !p.Since.IsZero() {
			since = time.Since(p.Since).Truncate(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\n", p.Address, p.ASN, p.State, since, p.Advertised)
	}
	fmt.Fprintf(w, "announced: %s\n", strings.Join(b.Announced, " "))
	if b.Error != "" {
		fmt.Fprintf(w, "error: %s\n", b.Error)
	}
}

// backendTraffic is a backend's packets and bytes for its VIP, or, from a data plane that
// counts per address only, the address's node-wide figures marked with a star.
func backendTraffic(b daemon.BackendView) (packets, bytes string) {
	if b.PerVIP {
		return fmt.Sprint(b.Packets), fmt.Sprint(b.Bytes)
	}
	return fmt.Sprintf("%d*", b.NodePackets), fmt.Sprintf("%d*", b.NodeBytes)
}

// nodeWideNote explains the star, when a figure has one.
func nodeWideNote(w *tabwriter.Writer, v daemon.View) {
	for _, vip := range v.VIPs {
		for _, b := range vip.Backends {
			if !b.PerVIP {
				fmt.Fprintf(w, "* the address's packets for all its VIPs: the %s data plane counts per backend address, not per VIP\n", v.Mode)
				return
			}
		}
	}
}

// checkColumns are a backend's check in `l4lb backends`: type and path ("http tunnel"),
// the last successful round trip, and the last error with how long ago it was ("-" for
// none).
func checkColumns(c *daemon.CheckView) (check, rtt, lastErr string) {
	if c == nil {
		return "-", "-", "-"
	}
	check, rtt, lastErr = c.Type+" "+c.Via, "-", "-"
	if c.LastRTTSeconds > 0 {
		rtt = time.Duration(c.LastRTTSeconds * float64(time.Second)).Round(10 * time.Microsecond).String()
	}
	if c.LastError != "" {
		lastErr = c.LastError
		if !c.LastErrorAt.IsZero() {
			lastErr += " (" + time.Since(c.LastErrorAt).Round(time.Second).String() + " ago)"
		}
	}
	return check, rtt, lastErr
}

func upDown(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// printVIPs prints an ipvsadm-like table.
func printVIPs(w *tabwriter.Writer, v daemon.View, withBackends bool) {
	fmt.Fprintln(w, "VIP\tNAME\tSTATE\tPACKETS\tBYTES\tNEW FLOWS")
	for _, vip := range v.VIPs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\n", vip.Key, vip.Name, upDown(vip.Up), vip.Packets, vip.Bytes, vip.NewFlows)
		if withBackends {
			for _, b := range vip.Backends {
				state := upDown(b.Healthy)
				if b.Drained {
					state += ",drained"
				}
				p, by := backendTraffic(b)
				fmt.Fprintf(w, "  -> %s\tweight %d\t%s\t%s\t%s\t\n", b.Address, b.Weight, state, p, by)
			}
		}
	}
	if withBackends {
		nodeWideNote(w, v)
	}
}

func newMutateCmds(f *clientFlags) []*cobra.Command {
	path := func(vip, be, verb string) string {
		return "/v1/vips/" + url.PathEscape(vip) + "/backends/" + url.PathEscape(be) + "/" + verb
	}
	ok := func(cmd *cobra.Command, out []byte) error {
		return f.print(cmd.OutOrStdout(), out, func() error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "ok")
			return err
		})
	}
	drain := &cobra.Command{
		Use: "drain VIP BACKEND", Short: "Send a backend no new flows; its established flows stay", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			out, err := f.do(http.MethodPost, path(a[0], a[1], "drain"), nil)
			if err != nil {
				return err
			}
			return ok(cmd, out)
		},
	}
	undrain := &cobra.Command{
		Use: "undrain VIP BACKEND", Short: "Undo drain", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			out, err := f.do(http.MethodPost, path(a[0], a[1], "undrain"), nil)
			if err != nil {
				return err
			}
			return ok(cmd, out)
		},
	}
	weight := &cobra.Command{
		Use: "weight VIP BACKEND WEIGHT|config", Short: "Override a backend's weight ('config' goes back to the file's)", Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, a []string) error {
			body := map[string]any{"weight": nil}
			if a[2] != "config" {
				n, err := strconv.ParseInt(a[2], 10, 64)
				if err != nil {
					return fmt.Errorf("weight %q: want a number or 'config'", a[2])
				}
				body["weight"] = n
			}
			out, err := f.do(http.MethodPut, path(a[0], a[1], "weight"), body)
			if err != nil {
				return err
			}
			return ok(cmd, out)
		},
	}
	reload := &cobra.Command{
		Use: "reload", Short: "Reload the node's configuration file", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := f.do(http.MethodPost, "/v1/reload", nil)
			if err != nil {
				return err
			}
			return ok(cmd, out)
		},
	}
	return []*cobra.Command{drain, undrain, weight, reload}
}

// nextHops is the next hop MAC, or each interface's where interfaces have their own:
// "eth0 02:00:00:00:00:01, eth1 02:00:00:00:00:02".
func nextHops(v daemon.View) string {
	if len(v.NextHops) == 0 {
		return v.NextHop
	}
	var hops []string
	for _, ifc := range slices.Sorted(maps.Keys(v.NextHops)) {
		hops = append(hops, ifc+" "+v.NextHops[ifc])
	}
	return strings.Join(hops, ", ")
}
