package testbed_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/pkg/monitor"
	"github.com/l4lb/l4lb/testbed"
)

// monitorConfigs writes lbConfigs with web on backends web4, an admin token and a
// prefilter that denies deniedClient4.
func monitorConfigs(t *testing.T, confs lbConfigs, token string, web4 ...string) {
	t.Helper()
	confs.write(t, web4...)
	for _, lb := range testbed.LBNodes {
		raw, err := os.ReadFile(confs.path(lb))
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		cfg["admin"].(map[string]any)["token_file"] = token
		cfg["prefilter"] = map[string]any{"deny": []string{deniedClient4}}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(confs.path(lb), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// watch runs `l4lb monitor -o json` on an LB node until stop, collecting its events.
type watch struct {
	mu     sync.Mutex
	events []monitor.Event
	done   chan struct{}
}

func (w *watch) all() []monitor.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]monitor.Event(nil), w.events...)
}

func startWatch(t *testing.T, ctx context.Context, b *testbed.Bed, lb, token string) *watch {
	t.Helper()
	cmd := b.Command(ctx, lb, b.L4LB(), "monitor", "-o", "json", "--token-file", token)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &watch{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var e monitor.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("%s: monitor line %q: %v", lb, sc.Text(), err)
				continue
			}
			w.mu.Lock()
			w.events = append(w.events, e)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cmd.Wait() })
	// The node counts the stream once it subscribed: only then does traffic start.
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw, err := b.Output(ctx, lb, "curl", "-s", "-m", "2", "http://127.0.0.1:9100/v1/monitor/recent")
		var rv admin.RecentView
		if err == nil && json.Unmarshal([]byte(raw), &rv) == nil && rv.Watchers > 0 {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the monitor stream did not open within 10s: %v %s", lb, err, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPrivilegedMonitorTestbed: `l4lb monitor` on each LB node shows what that node did.
// A denied source's packets are drop_deny events on the node that dropped them, exactly
// as many as its deny counter counted; a kept-alive connection whose backend was drained
// and then removed shows as a moved flow, with the drained backend as prev, on the node
// whose conntrack held the connection and on no other.
func TestPrivilegedMonitorTestbed(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("monitor-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	confs := lbConfigs{dir: dir}
	monitorConfigs(t, confs, token, "be1", "be2")
	b := newBedWith(t, func(lb string) (string, []string) { return confs.path(lb), nil })
	ctx := context.Background()
	if err := b.In("client", "ip", "addr", "add", deniedClient4+"/24", "dev", "c0"); err != nil {
		t.Fatal(err)
	}
	waitAllHealthy(t, b, 30*time.Second)
	// A kept-alive connection on be2, opened before anyone watches: its new_flow event is
	// not what this test looks for.
	var held *testbed.KeptAlive
	for i := 0; i < 32 && held == nil; i++ {
		ks, err := b.OpenKeptAlive(1)
		if err != nil {
			t.Fatal(err)
		}
		if ks[0].Backend == "be2" {
			held = &ks[0]
		} else {
			ks[0].C.Close()
		}
	}
	if held == nil {
		t.Fatal("32 connections through the vip, none on be2")
	}
	defer held.C.Close()
	src := netip.MustParseAddrPort(held.C.LocalAddr().String())
	// The node that handled it is the one whose conntrack tracks it.
	handler := ""
	for _, lb := range testbed.LBNodes {
		raw, err := b.Output(ctx, lb, b.L4LB(), "flows", "--flow", "tcp", src.String(), testbed.VIP4+":80", "-o", "json")
		if err != nil {
			t.Fatalf("%s: l4lb flows: %v\n%s", lb, err, raw)
		}
		var v daemon.FlowLookupView
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatalf("%s: %v\n%s", lb, err, raw)
		}
		if v.Tracked {
			if handler != "" {
				t.Fatalf("both nodes track %s", src)
			}
			handler = lb
		}
	}
	if handler == "" {
		t.Fatalf("no node tracks the connection from %s", src)
	}
	t.Logf("the connection from %s to be2 is handled by %s", src, handler)

	wctx, stop := context.WithCancel(ctx)
	defer stop()
	watches := map[string]*watch{}
	for _, lb := range testbed.LBNodes {
		watches[lb] = startWatch(t, wctx, b, lb, token)
	}

	// A denied source: never answered.
	out, _ := b.Output(ctx, "client", "sh", "-c", "for i in 1 2 3; do curl -s -m 1 --interface "+deniedClient4+" http://"+testbed.VIP4+"/ || echo FAILED; done")
	if strings.Fields(out)[0] != "FAILED" || len(strings.Fields(out)) != 3 {
		t.Errorf("denied client: %q, want 3 failures", out)
	}

	// be2 drained on both nodes: the held connection stays on it.
	for _, lb := range testbed.LBNodes {
		if raw, err := b.Output(ctx, lb, b.L4LB(), "drain", "web", testbed.BackendAddr4("be2"), "--token-file", token); err != nil {
			t.Fatalf("%s: drain: %v\n%s", lb, err, raw)
		}
	}
	if got, err := held.Get(); err != nil || got != "be2" {
		t.Fatalf("after drain, the held connection: %q %v, want be2", got, err)
	}
	// Then removed from the configuration: once its member grace is over, the held
	// connection's next packet finds its entry naming a backend that left and is placed
	// again, on be1, which has no such connection.
	monitorConfigs(t, confs, token, "be1")
	for _, lb := range testbed.LBNodes {
		if err := b.Signal(lb, "l4lb", syscall.SIGHUP, 0); err != nil {
			t.Fatal(err)
		}
	}
	if !testbed.Eventually(ctx, func() bool {
		st, err := webBackends(ctx, b)
		return err == nil && len(st[testbed.LBNodes[0]]) == 1 && len(st[testbed.LBNodes[1]]) == 1
	}) {
		t.Fatal("be2 not removed on both nodes")
	}
	time.Sleep(3 * time.Second) // the member grace (2 s)
	if got, err := held.Get(); err == nil {
		t.Logf("the held connection after be2 left answered %q", got)
	}
	time.Sleep(500 * time.Millisecond)
	stop()

	be2 := netip.MustParseAddr(testbed.BackendAddr4("be2"))
	var denyEvents int
	for _, lb := range testbed.LBNodes {
		<-watches[lb].done
		evs := watches[lb].all()
		deny, moved := 0, 0
		for _, e := range evs {
			switch {
			case e.Type == monitor.Drop && e.Reason == "drop_deny" && e.Src.Addr().String() == deniedClient4:
				deny++
				if e.Source != "xdp" || e.Dst.String() != testbed.VIP4+":80" || e.VIP != "web" || e.Len == 0 || len(e.Data) == 0 {
					t.Errorf("%s: deny event %+v", lb, e)
				}
			case e.Src == src && e.Reason == monitor.ReasonMoved:
				moved++
				if e.PrevBackend != be2 || e.VIP != "web" || e.Backend != netip.MustParseAddr(testbed.BackendAddr4("be1")) {
					t.Errorf("%s: moved event %+v, want web from be2 to be1", lb, e)
				}
			case e.Src.Addr().String() == deniedClient4:
				t.Errorf("%s: an event of the denied source that is not drop_deny: %+v", lb, e)
			}
		}
		// Every deny drop this node counted since the watch began is an event.
		raw, err := b.Output(ctx, lb, b.L4LB(), "deny", "list", "-o", "json")
		if err != nil {
			t.Fatalf("%s: l4lb deny list: %v\n%s", lb, err, raw)
		}
		var list []daemon.DenyEntry
		if err := json.Unmarshal([]byte(raw), &list); err != nil {
			t.Fatal(err)
		}
		var drops uint64
		for _, d := range list {
			drops += d.Drops
		}
		t.Logf("%s: %d events, %d drop_deny of %d deny drops counted, %d moved", lb, len(evs), deny, drops, moved)
		if uint64(deny) != drops {
			t.Errorf("%s: %d drop_deny events, the node counted %d deny drops", lb, deny, drops)
		}
		denyEvents += deny
		if want := map[bool]int{true: 1, false: 0}[lb == handler]; moved < want || lb != handler && moved != 0 {
			t.Errorf("%s: %d moved events of the held connection, handled by %s", lb, moved, handler)
		}
	}
	if denyEvents < 3 {
		t.Errorf("%d drop_deny events in all, want at least the 3 curls' SYNs", denyEvents)
	}
}
