package health

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func check(t *testing.T, c Config, target netip.AddrPort) error {
	t.Helper()
	ch, err := New(c.WithDefaults())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return ch.Check(ctx, Probe{Addr: target})
}

func listenTCP(t *testing.T) (net.Listener, netip.AddrPort) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln, netip.MustParseAddrPort(ln.Addr().String())
}

func TestTCP(t *testing.T) {
	ln, ap := listenTCP(t)
	if err := check(t, Config{Type: "tcp"}, ap); err != nil {
		t.Errorf("listening port: %v", err)
	}
	ln.Close()
	if err := check(t, Config{Type: "tcp"}, ap); !errors.Is(err, ErrUnhealthy) {
		t.Errorf("closed port: %v", err)
	}
}

func TestHTTP(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "backend be2 ready") })
	mux.HandleFunc("/fail", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tls := httptest.NewTLSServer(mux)
	defer tls.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	tap := netip.MustParseAddrPort(tls.Listener.Addr().String())
	for _, tc := range []struct {
		name   string
		c      Config
		target netip.AddrPort
		ok     bool
	}{
		{"status 200", Config{Type: "http", Path: "/ok"}, ap, true},
		{"status 503", Config{Type: "http", Path: "/fail"}, ap, false},
		{"expected 503", Config{Type: "http", Path: "/fail", ExpectStatus: 503}, ap, true},
		{"body match", Config{Type: "http", Path: "/ok", BodyMatch: "ready"}, ap, true},
		{"body mismatch", Config{Type: "http", Path: "/ok", BodyMatch: "draining"}, ap, false},
		{"redirect is not followed", Config{Type: "http", Path: "/redirect"}, ap, false},
		{"https", Config{Type: "https", Path: "/ok", InsecureSkipVerify: true}, tap, true},
		{"https with an untrusted certificate", Config{Type: "https", Path: "/ok"}, tap, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(t, tc.c, tc.target)
			if (err == nil) != tc.ok {
				t.Errorf("healthy=%v, want %v (err %v)", err == nil, tc.ok, err)
			}
		})
	}
}

// udpServer answers each datagram with reply(datagram); a nil reply is no answer.
func udpServer(t *testing.T, reply func([]byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := reply(buf[:n]); r != nil {
				pc.WriteTo(r, from)
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

// Each way a udp check fails has an error of its own: an operator reading LastError must
// tell a wrong answer from a silent backend from a closed port.
func TestUDP(t *testing.T) {
	echo := udpServer(t, func(b []byte) []byte { return append([]byte("be1:"), b...) })
	silent := udpServer(t, func([]byte) []byte { return nil })
	closed, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := netip.MustParseAddrPort(closed.LocalAddr().String())
	closed.Close()
	sentinels := []error{ErrWrongReply, ErrNoReply, ErrPortUnreachable}
	for _, tc := range []struct {
		name    string
		c       Config
		target  netip.AddrPort
		want    error // nil: healthy
		wantMsg string
		within  time.Duration
	}{
		{"echo", Config{Payload: "ping", Expect: "be1:ping"}, echo, nil, "", time.Second},
		{"any reply without expect", Config{Payload: "ping"}, echo, nil, "", time.Second},
		{"wrong reply", Config{Payload: "ping", Expect: "pong"}, echo, ErrWrongReply, `wrong reply: 8 bytes "be1:ping" do not contain "pong"`, time.Second},
		{"no reply", Config{Payload: "ping", Timeout: 200 * time.Millisecond}, silent, ErrNoReply, "no reply within", time.Second},
		{"port unreachable", Config{Payload: "ping"}, unreachable, ErrPortUnreachable, "port unreachable (icmp)", 500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Type = "udp"
			ch, err := New(tc.c.WithDefaults())
			if err != nil {
				t.Fatal(err)
			}
			timeout := tc.c.WithDefaults().Timeout
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			err = ch.Check(ctx, Probe{Addr: tc.target})
			if took := time.Since(start); took > tc.within {
				t.Errorf("took %s, want under %s", took, tc.within)
			}
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unhealthy: %v", err)
				}
				return
			}
			t.Log(err)
			if !errors.Is(err, ErrUnhealthy) || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %v, want %v with %q", err, tc.want, tc.wantMsg)
			}
			for _, s := range sentinels {
				if s != tc.want && errors.Is(err, s) {
					t.Errorf("error %v is also %v", err, s)
				}
			}
		})
	}
}

func TestNewRejectsUnknownType(t *testing.T) {
	if _, err := New(Config{Type: "icmp"}); err == nil {
		t.Error("icmp accepted")
	}
}

func TestStaggerDelay(t *testing.T) {
	iv := time.Second
	a, b := StaggerDelay("web/198.51.100.11", iv), StaggerDelay("web/198.51.100.12", iv)
	if a < 0 || a >= iv || b < 0 || b >= iv || a == b {
		t.Errorf("delays %s %s", a, b)
	}
	if StaggerDelay("web/198.51.100.11", iv) != a {
		t.Error("delay not deterministic")
	}
}

func TestProberTransitions(t *testing.T) {
	ln, ap := listenTCP(t)
	var mu sync.Mutex
	var got []Transition
	p := NewProber(slog.New(slog.NewTextHandler(io.Discard, nil)), func(tr Transition) {
		mu.Lock()
		got = append(got, tr)
		mu.Unlock()
	})
	cfg := Config{Type: "tcp", Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, Rise: 2, Fall: 2}
	p.Set([]Target{{Key: "web/a", Addr: ap, Checker: TCP{}, Config: cfg}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)

	waitFor := func(n int) []Transition {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			c := append([]Transition(nil), got...)
			mu.Unlock()
			if len(c) >= n {
				return c
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("waited for %d transitions, got %v", n, got)
		return nil
	}
	time.Sleep(150 * time.Millisecond)
	if up, known := p.State("web/a"); !up || !known || len(got) != 0 {
		t.Fatalf("healthy target: up=%v known=%v transitions %v", up, known, got)
	}
	ln.Close()
	tr := waitFor(1)
	if tr[0].Up || tr[0].Key != "web/a" || tr[0].Err == nil {
		t.Fatalf("first transition %+v, want down with an error", tr[0])
	}
	time.Sleep(100 * time.Millisecond) // more failures: no repeated notification
	ln2, err := net.Listen("tcp4", ap.String())
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", ap, err)
	}
	defer ln2.Close()
	go func() {
		for {
			c, err := ln2.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tr = waitFor(2)
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !got[1].Up {
		t.Fatalf("transitions %+v, want exactly down then up", got)
	}
	if p.Transitions() != 2 {
		t.Errorf("Transitions() = %d", p.Transitions())
	}
	p.Set(nil)
	if _, known := p.State("web/a"); known {
		t.Error("removed target still known")
	}
}

// A probe that Set removed or replaced reports nothing, even if its check was already
// running: its key may belong to a new probe by then, which starts up.
func TestProberStaleProbeIsSilent(t *testing.T) {
	var got []Transition
	p := NewProber(slog.New(slog.NewTextHandler(io.Discard, nil)), func(tr Transition) { got = append(got, tr) })
	tg := Target{Key: "web/198.51.100.1", Addr: netip.MustParseAddrPort("127.0.0.1:9"), Checker: TCP{}, Config: Config{Type: "tcp"}}
	p.Set([]Target{tg})
	old := p.running[tg.Key]
	p.Set(nil)
	p.Set([]Target{tg})
	p.transition(old, false, errors.New("late"))
	if len(got) != 0 {
		t.Fatalf("stale probe reported %v", got)
	}
	if up, _ := p.State(tg.Key); !up {
		t.Error("re-added target is not up")
	}
	p.transition(p.running[tg.Key], false, errors.New("now"))
	if len(got) != 1 {
		t.Fatalf("current probe's transition not reported: %v", got)
	}
}

// The request goes to the probe's address, which is also the URL's host: for a tunnel
// check that is VIP:port, as a client would send it.
func TestHTTPHostIsProbeAddr(t *testing.T) {
	hosts := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case hosts <- r.Host:
		default:
		}
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	if err := check(t, Config{Type: "http"}, ap); err != nil {
		t.Fatal(err)
	}
	if h := <-hosts; h != ap.String() {
		t.Errorf("Host %q, want %q", h, ap)
	}
}

// A change of what or how a target is probed restarts its probe, keeping its up state;
// an identical target keeps its probe.
func TestProberSetRestartsOnDialMarkPath(t *testing.T) {
	p := NewProber(slog.New(slog.NewTextHandler(io.Discard, nil)), func(Transition) {})
	base := Target{Key: "web/198.51.100.1", Addr: netip.MustParseAddrPort("198.51.100.1:80"), Checker: TCP{},
		Config: Config{Type: "tcp"}, Path: "tunnel", Dial: netip.MustParseAddrPort("192.0.2.1:80"), Mark: 0x2a}
	p.Set([]Target{base})
	for _, tc := range []struct {
		name    string
		change  func(*Target)
		restart bool
	}{
		{"nothing", func(*Target) {}, false},
		{"mark", func(t *Target) { t.Mark = 0x2b }, true},
		{"dial", func(t *Target) { t.Dial = netip.MustParseAddrPort("192.0.2.2:80") }, true},
		{"dial to zero (the backend's address)", func(t *Target) { t.Dial = netip.AddrPort{} }, true},
		{"path", func(t *Target) { t.Path = "direct" }, true},
		{"addr", func(t *Target) { t.Addr = netip.MustParseAddrPort("198.51.100.1:81") }, true},
		{"config", func(t *Target) { t.Config.Rise = 5 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Set([]Target{base})
			old := p.running[base.Key]
			old.up.Store(false)
			tg := base
			tc.change(&tg)
			p.Set([]Target{tg})
			now := p.running[base.Key]
			if restarted := now != old; restarted != tc.restart {
				t.Fatalf("restarted=%v, want %v", restarted, tc.restart)
			}
			if now.up.Load() {
				t.Error("down target came back up")
			}
			if now.t != tg {
				t.Errorf("probe runs %+v, want %+v", now.t, tg)
			}
		})
	}
}

// Dial, when set, is what the probe connects to; Addr only names the backend.
func TestProberDialsDial(t *testing.T) {
	ln, ap := listenTCP(t)
	defer ln.Close()
	closed := closedTCPPort(t)
	down := make(chan Transition, 4)
	p := NewProber(slog.New(slog.NewTextHandler(io.Discard, nil)), func(tr Transition) { down <- tr })
	cfg := Config{Type: "tcp", Interval: 10 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 1, Fall: 1}
	p.Set([]Target{{Key: "web/a", Addr: closed, Dial: ap, Checker: TCP{}, Config: cfg}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	select {
	case tr := <-down:
		t.Fatalf("probing Dial %s (listening), Addr %s (closed): %+v", ap, closed, tr)
	case <-time.After(150 * time.Millisecond):
	}
	p.Set([]Target{{Key: "web/a", Addr: ap, Dial: closed, Checker: TCP{}, Config: cfg}})
	select {
	case tr := <-down:
		if tr.Up {
			t.Fatalf("transition %+v, want down", tr)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("probing Dial %s (closed), Addr %s (listening): still up", closed, ap)
	}
}

// closedTCPPort is a loopback port nothing listens on (it was free a moment ago).
func closedTCPPort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return ap
}

// Status and OnResult tell an operator and the metrics what each check did: type, path,
// where it went, how long it took, and the last failure even after a later success.
func TestProberStatusAndResults(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	backend := netip.MustParseAddrPort("198.51.100.11:80")
	results := make(chan Result, 64)
	p := NewProber(slog.New(slog.NewTextHandler(io.Discard, nil)), func(Transition) {})
	p.OnResult(func(r Result) {
		select {
		case results <- r:
		default:
		}
	})
	cfg := Config{Type: "http", Interval: 10 * time.Millisecond, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 1}.WithDefaults()
	ch, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const key = "web/198.51.100.11"
	p.Set([]Target{{Key: key, Addr: backend, Dial: ap, Path: "tunnel", Checker: ch, Config: cfg}})
	if st, ok := p.Status(key); !ok || !st.Up || !st.LastAt.IsZero() || st.Dial != ap || st.Type != "http" || st.Path != "tunnel" {
		t.Fatalf("before any check: %+v, %v", st, ok)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)

	next := func(wantErr bool) Result {
		t.Helper()
		deadline := time.After(3 * time.Second)
		for {
			select {
			case r := <-results:
				if (r.Err != nil) == wantErr {
					return r
				}
			case <-deadline:
				t.Fatalf("no result with error=%v", wantErr)
			}
		}
	}
	r := next(false)
	if r.Key != key || r.Type != "http" || r.Path != "tunnel" || r.RTT <= 0 {
		t.Errorf("result %+v", r)
	}
	st, _ := p.Status(key)
	if !st.Up || st.LastAt.IsZero() || st.LastRTT <= 0 || st.LastError != "" || st.Dial != ap || st.Mark != 0 {
		t.Errorf("healthy status %+v", st)
	}

	failing.Store(true)
	r = next(true)
	if !errors.Is(r.Err, ErrUnhealthy) || r.RTT <= 0 {
		t.Errorf("failed result %+v", r)
	}
	time.Sleep(30 * time.Millisecond)
	st, _ = p.Status(key)
	if st.Up || !strings.Contains(st.LastError, "status 503") || st.LastErrorAt.IsZero() {
		t.Errorf("failing status %+v", st)
	}
	failedAt := st.LastErrorAt

	failing.Store(false)
	next(false)
	time.Sleep(30 * time.Millisecond)
	st, _ = p.Status(key)
	if !st.Up || !strings.Contains(st.LastError, "status 503") || !st.LastAt.After(failedAt) {
		t.Errorf("recovered status %+v: want up, the 503 kept, a check after it", st)
	}

	// A restart on a new path keeps why it last failed and forgets the old path's checks.
	// Stopped first, so no check on the new path runs before Status is read.
	cancel()
	p.Set([]Target{{Key: key, Addr: backend, Dial: ap, Path: "direct", Mark: 0x2a, Checker: ch, Config: cfg}})
	if st, _ := p.Status(key); st.Path != "direct" || st.Mark != 0x2a || !strings.Contains(st.LastError, "status 503") || !st.LastAt.IsZero() || st.LastRTT != 0 {
		t.Errorf("restarted status %+v", st)
	}
	if _, ok := p.Status("web/198.51.100.99"); ok {
		t.Error("unknown key has a status")
	}
}
