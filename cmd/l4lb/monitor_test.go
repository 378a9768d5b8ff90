package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/pcapgo"

	"github.com/l4lb/l4lb/pkg/monitor"
)

// fakeMonitor answers GET /v1/monitor and /v1/monitor/recent as the daemon's API does.
type fakeMonitor struct {
	events []monitor.Event
	end    bool // end the stream after the events; else hold it until the client goes

	mu      sync.Mutex
	queries []url.Values
	recents int
}

func (m *fakeMonitor) serve(t *testing.T) (addr, tokenFile string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/monitor", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(401)
			w.Write([]byte(`{"error": "missing or wrong bearer token"}`))
			return
		}
		m.mu.Lock()
		m.queries = append(m.queries, r.URL.Query())
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.(http.Flusher).Flush()
		for _, e := range m.events {
			if err := monitor.WriteJSON(w, e); err != nil {
				return
			}
			w.Write([]byte("\n")) // a heartbeat between events
			w.(http.Flusher).Flush()
		}
		if !m.end {
			<-r.Context().Done()
		}
	})
	mux.HandleFunc("GET /v1/monitor/recent", func(w http.ResponseWriter, _ *http.Request) {
		m.mu.Lock()
		m.recents++
		n := m.recents
		m.mu.Unlock()
		// Each read finds 5 more events over the rate limit and 1 more to slow watchers.
		json.NewEncoder(w).Encode(map[string]any{"available": true, "drops": []any{}, "watchers": 1,
			"lost": monitor.Lost{RateLimited: uint64(5 * n), RingFull: 2, SlowClient: uint64(n)}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "http://"), tokenFile
}

func monitorEvents() []monitor.Event {
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	var out []monitor.Event
	for i, reason := range []string{"drop_deny", "drop_malformed", monitor.ReasonNewFlow, "drop_deny"} {
		e := monitor.Event{
			Time: at.Add(time.Duration(i) * time.Millisecond), Source: "xdp", Type: monitor.Drop, Reason: reason, Proto: "tcp", VIP: "web",
			Src: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), uint16(40000+i)), Dst: netip.MustParseAddrPort("203.0.113.10:80"),
			Len: 74, Data: bytes.Repeat([]byte{byte(i + 1)}, 54),
		}
		if reason == monitor.ReasonNewFlow {
			e.Type = monitor.Flow
			e.Backend = netip.MustParseAddr("198.51.100.11")
		}
		out = append(out, e)
	}
	return out
}

// syncBuffer is a buffer one goroutine writes while another reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// runMonitorCmd runs l4lb with ctx, returning stdout and stderr apart.
func runMonitorCmd(ctx context.Context, stdout, stderr io.Writer, args ...string) error {
	cmd := newRootCmd(stdout, stderr)
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}

func monitorRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var o, e bytes.Buffer
	err = runMonitorCmd(ctx, &o, &e, args...)
	if ctx.Err() != nil {
		t.Fatalf("%v: still running after 20s", args)
	}
	return o.String(), e.String(), err
}

func wantLines(evs []monitor.Event) string {
	var b strings.Builder
	for _, e := range evs {
		e.Time = e.Time.Local()
		b.WriteString(monitor.Line(e) + "\n")
	}
	return b.String()
}

// TestMonitorText: the flags become the query; -c stops after N events; lines as
// monitor.Line prints them; the summary on stderr.
func TestMonitorText(t *testing.T) {
	m := &fakeMonitor{events: monitorEvents()}
	addr, tok := m.serve(t)
	out, errOut, err := monitorRun(t, "monitor", "--admin", addr, "--token-file", tok,
		"--vip", "web", "--reason", "drop_deny", "--src", "198.51.100.0/24", "-c", "3")
	if err != nil {
		t.Fatalf("monitor: %v\n%s", err, errOut)
	}
	if want := wantLines(m.events[:3]); out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if !strings.Contains(out, "drop drop_deny tcp 198.51.100.7:40000 -> 203.0.113.10:80 vip=web backend=- len=74") {
		t.Errorf("stdout has not the drop's line:\n%s", out)
	}
	want := url.Values{"vip": {"web"}, "reason": {"drop_deny"}, "src": {"198.51.100.0/24"}}
	if len(m.queries) != 1 || m.queries[0].Encode() != want.Encode() {
		t.Errorf("queries %v, want %v", m.queries, want)
	}
	if errOut != "3 events\nlost on the node meanwhile: 5 over the rate limit, 0 to a full ring buffer, 1 to slow watchers\n" {
		t.Errorf("stderr %q", errOut)
	}

	m.queries = nil
	if _, _, err := monitorRun(t, "monitor", "--admin", addr, "--token-file", tok, "--type", "flow", "--sample", "100", "-c", "1"); err != nil {
		t.Fatal(err)
	}
	if want := (url.Values{"type": {"flow"}, "sample": {"100"}}); len(m.queries) != 1 || m.queries[0].Encode() != want.Encode() {
		t.Errorf("queries %v, want %v", m.queries, want)
	}
}

// TestMonitorJSON: -o json prints the objects as the node sent them, one a line.
func TestMonitorJSON(t *testing.T) {
	m := &fakeMonitor{events: monitorEvents()}
	addr, tok := m.serve(t)
	out, errOut, err := monitorRun(t, "monitor", "--admin", addr, "--token-file", tok, "-o", "json", "-c", "4")
	if err != nil {
		t.Fatalf("monitor: %v\n%s", err, errOut)
	}
	var want bytes.Buffer
	for _, e := range m.events {
		monitor.WriteJSON(&want, e)
	}
	if out != want.String() {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want.String())
	}
}

func readPcap(t *testing.T, path string) (frames [][]byte, comments []string) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewNgReader(fh, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for {
		data, _, opts, err := r.ReadPacketDataWithOptions()
		if err == io.EOF {
			return frames, comments
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		frames = append(frames, data)
		comments = append(comments, strings.Join(opts.Comments, "; "))
	}
}

// TestMonitorPcap: -w writes the events' frames with their comments; -q prints nothing,
// without -q the lines are printed as well.
func TestMonitorPcap(t *testing.T) {
	m := &fakeMonitor{events: monitorEvents()}
	addr, tok := m.serve(t)
	for _, quiet := range []bool{true, false} {
		file := filepath.Join(t.TempDir(), "events.pcapng")
		args := []string{"monitor", "--admin", addr, "--token-file", tok, "-w", file, "-c", "3"}
		if quiet {
			args = append(args, "-q")
		}
		out, errOut, err := monitorRun(t, args...)
		if err != nil {
			t.Fatalf("monitor: %v\n%s", err, errOut)
		}
		if want := map[bool]string{true: "", false: wantLines(m.events[:3])}[quiet]; out != want {
			t.Errorf("quiet %v: stdout:\n%s\nwant:\n%s", quiet, out, want)
		}
		frames, comments := readPcap(t, file)
		if len(frames) != 3 {
			t.Fatalf("%d frames, want 3", len(frames))
		}
		for i, f := range frames {
			if !bytes.Equal(f, m.events[i].Data) || comments[i] != monitor.Comment(m.events[i]) {
				t.Errorf("frame %d: %x %q; want %x %q", i, f, comments[i], m.events[i].Data, monitor.Comment(m.events[i]))
			}
		}
	}
}

// TestMonitorInterrupt: Ctrl-C (the context's end) stops cleanly, with the pcap file
// complete up to the last event.
func TestMonitorInterrupt(t *testing.T) {
	m := &fakeMonitor{events: monitorEvents()[:2]}
	addr, tok := m.serve(t)
	file := filepath.Join(t.TempDir(), "events.pcapng")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- runMonitorCmd(ctx, &out, &errOut, "monitor", "--admin", addr, "--token-file", tok, "-w", file)
	}()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(out.String(), "\n") < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no 2 lines in 10s: %q", out.String())
		}
	}
	cancel() // Ctrl-C
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after Ctrl-C: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("monitor goes on after Ctrl-C")
	}
	if !strings.HasPrefix(errOut.String(), "2 events\n") {
		t.Errorf("stderr %q", errOut.String())
	}
	if frames, _ := readPcap(t, file); len(frames) != 2 {
		t.Errorf("%d frames in the file, want 2", len(frames))
	}
}

// TestMonitorStreamEnds: a stream the node ends is an error, not a quiet success.
func TestMonitorStreamEnds(t *testing.T) {
	m := &fakeMonitor{events: monitorEvents()[:1], end: true}
	addr, tok := m.serve(t)
	out, _, err := monitorRun(t, "monitor", "--admin", addr, "--token-file", tok)
	if err == nil || !strings.Contains(err.Error(), "the node ended the monitor stream") {
		t.Errorf("error %v, want the stream's end", err)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("stdout %q, want the one event", out)
	}
}

// TestMonitorRefused: what is wrong, said before connecting for flags, and the API's own
// message for a refusal; no pcap file is left behind.
func TestMonitorRefused(t *testing.T) {
	m := &fakeMonitor{}
	addr, tok := m.serve(t)
	noMonitor := http.NewServeMux()
	noMonitor.HandleFunc("GET /v1/monitor", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(404)
		w.Write([]byte(`{"error": "no monitor: this node's data plane reports no events"}`))
	})
	nm := httptest.NewServer(noMonitor)
	defer nm.Close()
	old := httptest.NewServer(http.NotFoundHandler()) // an l4lb before the monitor
	defer old.Close()
	badTok := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(badTok, []byte("nope\n"), 0o600)
	looseTok := filepath.Join(t.TempDir(), "loose")
	os.WriteFile(looseTok, []byte("s3cret\n"), 0o644)
	os.Chmod(looseTok, 0o644)
	host := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no token file", []string{"--admin", addr}, "needs --token-file"},
		{"token file others can read", []string{"--admin", addr, "--token-file", looseTok}, "world-readable"},
		{"wrong token", []string{"--admin", addr, "--token-file", badTok}, "missing or wrong bearer token"},
		{"no monitor", []string{"--admin", host(nm), "--token-file", tok}, "no monitor: this node's data plane reports no events"},
		{"an l4lb without the endpoint", []string{"--admin", host(old), "--token-file", tok}, "404 Not Found: this node's l4lb has no monitor"},
		{"nobody there", []string{"--admin", "127.0.0.1:1", "--token-file", tok}, "admin api:"},
		{"bad type", []string{"--admin", addr, "--token-file", tok, "--type", "drops"}, `--type "drops": want drop or flow`},
		{"sample 0", []string{"--admin", addr, "--token-file", tok, "--sample", "0"}, "--sample"},
		{"sampled drops", []string{"--admin", addr, "--token-file", tok, "--type", "drop", "--sample", "10"}, "only flow events are sampled"},
		{"bad src", []string{"--admin", addr, "--token-file", tok, "--src", "lb1"}, `--src "lb1"`},
		{"flow reason for drops", []string{"--admin", addr, "--token-file", tok, "--type", "drop", "--reason", "moved"}, "flow reason"},
		{"yaml", []string{"--admin", addr, "--token-file", tok, "-o", "yaml"}, `-o "yaml": want text or json`},
		{"quiet without a file", []string{"--admin", addr, "--token-file", tok, "-q"}, "-q prints nothing"},
		{"negative count", []string{"--admin", addr, "--token-file", tok, "-c", "-1"}, "-c -1"},
	} {
		file := filepath.Join(t.TempDir(), "events.pcapng")
		args := append([]string{"monitor"}, tc.args...)
		if tc.args[len(tc.args)-1] != "-q" {
			args = append(args, "-w", file)
		}
		_, _, err := monitorRun(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: the refused monitor left %s (%v)", tc.name, file, err)
		}
	}
	if len(m.queries) != 0 {
		t.Errorf("refused flags reached the node: %v", m.queries)
	}
}
