package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/pkg/monitor"
)

// monNode is a node with a monitor hub (nil: its data plane reports no events).
type monNode struct {
	recNode
	hub *monitor.Hub
}

func (n *monNode) Monitor() *monitor.Hub { return n.hub }

func monServer(t *testing.T, hub *monitor.Hub, tok string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(slog.New(slog.DiscardHandler), &monNode{hub: hub}, tok, prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	return srv
}

func monEvent(typ monitor.Type, reason, vip string, port uint16) monitor.Event {
	return monitor.Event{
		Time: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), Source: "xdp", Type: typ, Reason: reason, Proto: "tcp", VIP: vip,
		Src: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), port), Dst: netip.MustParseAddrPort("203.0.113.10:80"),
		Len: 74, Data: []byte{0xde, 0xad, 0xbe, 0xef},
	}
}

// stream is an open GET /v1/monitor.
type stream struct {
	resp   *http.Response
	lines  *bufio.Scanner
	cancel context.CancelFunc
}

func openStream(t *testing.T, srv *httptest.Server, query, auth string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/monitor"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	st := &stream{resp: resp, lines: bufio.NewScanner(resp.Body), cancel: cancel}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return st
}

// next is the stream's next event, skipping heartbeats.
func (s *stream) next(t *testing.T) monitor.Event {
	t.Helper()
	for s.lines.Scan() {
		if strings.TrimSpace(s.lines.Text()) == "" {
			continue
		}
		var e monitor.Event
		if err := json.Unmarshal(s.lines.Bytes(), &e); err != nil {
			t.Fatalf("stream line %q: %v", s.lines.Text(), err)
		}
		return e
	}
	t.Fatalf("stream ended: %v", s.lines.Err())
	return monitor.Event{}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestMonitorStreams: several streams at once, each gets the events its filter takes,
// with their packet bytes, in order.
func TestMonitorStreams(t *testing.T) {
	hub := monitor.NewHub(8)
	srv := monServer(t, hub, token)
	auth := "Bearer " + token
	all := openStream(t, srv, "", auth)
	web := openStream(t, srv, "?vip=web&type=drop", auth)
	deny := openStream(t, srv, "?reason=drop_deny&src=198.51.100.0/24", auth)
	if ct := all.resp.Header.Get("Content-Type"); all.resp.StatusCode != 200 || ct != "application/x-ndjson" {
		t.Fatalf("GET /v1/monitor: %d, Content-Type %q", all.resp.StatusCode, ct)
	}
	waitFor(t, "3 watchers", func() bool { return hub.Watchers() == 3 })

	evs := []monitor.Event{
		monEvent(monitor.Drop, "drop_deny", "web", 1),
		monEvent(monitor.Drop, "drop_malformed", "dns", 2),
		monEvent(monitor.Flow, monitor.ReasonNewFlow, "web", 3),
		monEvent(monitor.Drop, "drop_deny", "", 4),
	}
	for _, e := range evs {
		hub.Publish(e)
	}
	for _, tc := range []struct {
		name  string
		s     *stream
		ports []uint16
	}{{"all", all, []uint16{1, 2, 3, 4}}, {"web drops", web, []uint16{1}}, {"deny", deny, []uint16{1, 4}}} {
		for _, port := range tc.ports {
			e := tc.s.next(t)
			want := evs[port-1]
			if e.Src != want.Src || e.Reason != want.Reason || e.VIP != want.VIP || string(e.Data) != string(want.Data) || !e.Time.Equal(want.Time) {
				t.Errorf("%s: got %+v, want %+v", tc.name, e, want)
			}
		}
	}
	// The streams got nothing else: one more event for all of them comes next.
	last := monEvent(monitor.Drop, "drop_deny", "web", 5)
	hub.Publish(last)
	for name, s := range map[string]*stream{"all": all, "web": web, "deny": deny} {
		if e := s.next(t); e.Src != last.Src {
			t.Errorf("%s: got %v, want the last event", name, e.Src)
		}
	}
}

func TestMonitorRefused(t *testing.T) {
	hub := monitor.NewHub(8)
	get := func(srv *httptest.Server, path, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	srv := monServer(t, hub, token)
	readOnly := monServer(t, hub, "")
	noHub := monServer(t, nil, token)
	plain := httptest.NewServer(New(slog.New(slog.DiscardHandler), &recNode{}, token, prometheus.NewRegistry()))
	defer plain.Close()
	auth := "Bearer " + token
	for _, tc := range []struct {
		name     string
		srv      *httptest.Server
		path     string
		auth     string
		wantCode int
		wantBody string
	}{
		{"no token", srv, "/v1/monitor", "", 401, "bearer token"},
		{"wrong token", srv, "/v1/monitor", "Bearer nope", 401, "bearer token"},
		{"read-only node", readOnly, "/v1/monitor", auth, 403, "read-only"},
		{"bad sample", srv, "/v1/monitor?sample=0", auth, 400, "sample"},
		{"bad src", srv, "/v1/monitor?src=here", auth, 400, "src"},
		{"bad type", srv, "/v1/monitor?type=drops", auth, 400, "type"},
		{"unknown parameter", srv, "/v1/monitor?vips=web", auth, 400, "vips"},
		{"data plane without events", noHub, "/v1/monitor", auth, 404, "no monitor"},
		{"node without a monitor", plain, "/v1/monitor", auth, 404, "no monitor"},
		{"recent: node without a monitor", plain, "/v1/monitor/recent", "", 200, `"available": false`},
		{"recent: data plane without events", noHub, "/v1/monitor/recent", "", 200, `"note": "no monitor`},
	} {
		code, body := get(tc.srv, tc.path, tc.auth)
		if code != tc.wantCode || !strings.Contains(body, tc.wantBody) {
			t.Errorf("%s: %d %s; want %d with %q", tc.name, code, body, tc.wantCode, tc.wantBody)
		}
	}
	if hub.Watchers() != 0 {
		t.Errorf("a refused request left %d watchers", hub.Watchers())
	}
}

// TestMonitorClientGone: the handler returns, and its watcher goes, when the client hangs
// up; and the stream ends when the hub closes (the node stops).
func TestMonitorClientGone(t *testing.T) {
	hub := monitor.NewHub(8)
	srv := monServer(t, hub, token)
	s := openStream(t, srv, "?type=flow", "Bearer "+token)
	waitFor(t, "the watcher", func() bool { return hub.Watchers() == 1 })
	if w := hub.Want(); !w.Flows {
		t.Errorf("a flow stream is open but Want %+v", w)
	}
	s.cancel()
	waitFor(t, "the handler to return", func() bool { return hub.Watchers() == 0 })
	if w := hub.Want(); w.Flows {
		t.Errorf("no stream is open but Want %+v", w)
	}

	s = openStream(t, srv, "", "Bearer "+token)
	waitFor(t, "the watcher", func() bool { return hub.Watchers() == 1 })
	hub.Close()
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, s.resp.Body); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream goes on after the hub closed")
	}
}

// TestMonitorOutlivesServerTimeouts: a stream lasts beyond the server's read and write
// timeouts (the daemon's are 30 and 60 s), and idle streams carry heartbeats.
func TestMonitorOutlivesServerTimeouts(t *testing.T) {
	old := monitorHeartbeat
	t.Cleanup(func() { monitorHeartbeat = old }) // last: the handler reads it until it returns
	monitorHeartbeat = 50 * time.Millisecond
	hub := monitor.NewHub(8)
	srv := httptest.NewUnstartedServer(New(slog.New(slog.DiscardHandler), &monNode{hub: hub}, token, prometheus.NewRegistry()))
	srv.Config.ReadTimeout = 200 * time.Millisecond
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close) // after the stream's cleanup: Close waits for its handler
	s := openStream(t, srv, "", "Bearer "+token)
	waitFor(t, "the watcher", func() bool { return hub.Watchers() == 1 })
	// Heartbeats: blank lines, past both timeouts.
	start := time.Now()
	beats := 0
	for time.Since(start) < 600*time.Millisecond {
		if !s.lines.Scan() {
			t.Fatalf("stream ended after %v: %v", time.Since(start), s.lines.Err())
		}
		if s.lines.Text() != "" {
			t.Fatalf("idle stream sent %q", s.lines.Text())
		}
		beats++
	}
	if beats < 2 {
		t.Errorf("%d heartbeats in 600ms at one each 50ms", beats)
	}
	hub.Publish(monEvent(monitor.Drop, "drop_deny", "web", 9))
	if e := s.next(t); e.Src.Port() != 9 {
		t.Errorf("got %+v", e)
	}
}

// TestMonitorRecent: the recent drops and the loss counters need no token and carry no
// packet bytes.
func TestMonitorRecent(t *testing.T) {
	hub := monitor.NewHub(2)
	srv := monServer(t, hub, token)
	for i := range 3 {
		hub.Publish(monEvent(monitor.Drop, "drop_deny", "web", uint16(i+1)))
	}
	hub.Publish(monEvent(monitor.Flow, monitor.ReasonNewFlow, "web", 9))
	hub.SetSourceLost(monitor.Lost{RateLimited: 5, RingFull: 1})
	resp, err := http.Get(srv.URL + "/v1/monitor/recent")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/monitor/recent: %d %s", resp.StatusCode, body)
	}
	if strings.Contains(string(body), `"data"`) {
		t.Errorf("recent drops carry packet bytes:\n%s", body)
	}
	var v RecentView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Drops) != 2 || v.Drops[0].Src.Port() != 2 || v.Drops[1].Src.Port() != 3 {
		t.Errorf("drops %+v, want the last two, oldest first", v.Drops)
	}
	if !v.Available || v.Lost != (monitor.Lost{RateLimited: 5, RingFull: 1}) || v.Watchers != 0 {
		t.Errorf("lost %+v, watchers %d", v.Lost, v.Watchers)
	}
	// The hub's own copy keeps its bytes.
	if d := hub.RecentDrops(); len(d[0].Data) == 0 {
		t.Error("serving the recent drops took the hub's packet bytes")
	}
}
