package daemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
)

// Each interface gets the next hop of its own routes, not the first default route's;
// an interface without one is reported with the reason; a neighbour change is seen
// without polling.
func TestPrivilegedNextHopPerInterface(t *testing.T) {
	testutil.RequirePrivileged(t)
	lbNS := testutil.NewNetNS(t, "lb")
	r1 := testutil.NewNetNS(t, "r1")
	r2 := testutil.NewNetNS(t, "r2")
	testutil.Veth(t, lbNS, "up0", r1, "r1")
	testutil.Veth(t, lbNS, "up1", r2, "r2")
	testutil.Veth(t, lbNS, "lone", r2, "r2b")
	lbNS.Run(t, "ip", "addr", "add", "192.0.2.2/26", "dev", "up0")
	lbNS.Run(t, "ip", "addr", "add", "203.0.113.2/26", "dev", "up1")
	lbNS.Run(t, "ip", "route", "add", "default", "via", "192.0.2.1", "dev", "up0")
	lbNS.Run(t, "ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.1", "dev", "up1")
	lbNS.Run(t, "ip", "neigh", "replace", "192.0.2.1", "lladdr", "02:00:00:00:01:01", "dev", "up0", "nud", "permanent")
	lbNS.Run(t, "ip", "neigh", "replace", "203.0.113.1", "lladdr", "02:00:00:00:02:01", "dev", "up1", "nud", "permanent")

	if err := lbNS.Do(func() error {
		hops, missing, err := interfaceNextHops([]string{"up0", "up1", "lone"})
		if err != nil {
			return err
		}
		if got := hops["up0"].String(); got != "02:00:00:00:01:01" {
			t.Errorf("up0: next hop %s, want its default route's gateway 02:00:00:00:01:01", got)
		}
		if got := hops["up1"].String(); got != "02:00:00:00:02:01" {
			t.Errorf("up1: next hop %s, want its own route's gateway 02:00:00:00:02:01", got)
		}
		if _, ok := hops["lone"]; ok || missing["lone"] == "" {
			t.Errorf("lone: next hop %v, missing %q: want it reported missing", hops["lone"], missing["lone"])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A neighbour change reaches the watcher at once (the poll interval is an hour).
	var calls atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	go func() {
		_ = lbNS.Do(func() error {
			close(started)
			watchRouting(ctx, func() time.Duration { return time.Hour }, func(string, ...any) {}, func() { calls.Add(1) })
			return nil
		})
	}()
	<-started
	time.Sleep(200 * time.Millisecond)
	lbNS.Run(t, "ip", "neigh", "replace", "203.0.113.1", "lladdr", "02:00:00:00:02:99", "dev", "up1", "nud", "permanent")
	deadline := time.Now().Add(3 * time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if calls.Load() == 0 {
		t.Error("a neighbour change did not reach the watcher")
	}
}
