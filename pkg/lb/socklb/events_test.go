package socklb

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/lb"
)

// eventsOf runs e's socket LB reader with a sink and returns a function that waits for a
// connect event of VIP id mark (the end of what a client did) and returns every event
// read before it and that event. The sink sees events in ring order.
func eventsOf(t *testing.T, e *env) func(mark uint32) ([]Event, Event) {
	t.Helper()
	ch := make(chan Event, 1024)
	e.sock.SetEventSink(func(ev Event) { ch <- ev })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.sock.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return func(mark uint32) ([]Event, Event) {
		t.Helper()
		var out []Event
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ev := <-ch:
				if ev.Kind == KindConnect && ev.VIPID == mark {
					return out, ev
				}
				out = append(out, ev)
			case <-deadline:
				t.Fatalf("no connect event of vip %d; read %+v", mark, out)
			}
		}
	}
}

// TestPrivilegedMonitorEvents: the socket LB reports a connect or datagram to a VIP with
// no backend while the monitor asks for drops, with the VIP the socket named, at most the
// rate a second per CPU (the rest counted); sampled connects name the VIP, not the
// backend they were sent to.
func TestPrivilegedMonitorEvents(t *testing.T) {
	e := newEnv(t, "")
	web := e.setVIP("203.0.113.10", 80, lb.ProtoTCP, weights(1, v4...))
	// Every backend drained: the ring names none.
	dead4 := e.setVIP("203.0.113.11", 80, lb.ProtoTCP, weights(0, v4...))
	dead6 := e.setVIP("2001:db8:f::11", 53, lb.ProtoUDP, weights(0, v6...))
	next := eventsOf(t, e)
	mark := clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 1}

	t.Run("sampled connect names the vip", func(t *testing.T) {
		e.client(mark, true)
		evs, ev := next(web)
		if len(evs) != 0 {
			t.Fatalf("events before the mark: %+v", evs)
		}
		if ev.VIP != netip.MustParseAddrPort("203.0.113.10:80") || ev.Proto != uint8(lb.ProtoTCP) || !ev.Connect ||
			ev.BackendID < 1 || ev.BackendID > 3 || ev.Comm != "socklb.test" {
			t.Errorf("connect event %+v, want vip 203.0.113.10:80 tcp, a backend of 1..3", ev)
		}
	})
	t.Run("monitor off reports nothing", func(t *testing.T) {
		e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.11", Port: 80, Count: 3}, true)
		e.client(mark, true)
		if evs, _ := next(web); len(evs) != 0 {
			t.Fatalf("monitor off: %+v", evs)
		}
	})
	t.Run("no backend", func(t *testing.T) {
		if err := e.sock.SetMonitor(true, 0); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.11", Port: 80, Count: 2}, true)
		e.client(clientSpec{Proto: "udp", Family: 6, Addr: "2001:db8:f::11", Port: 53, Count: 1}, true)
		e.client(mark, true)
		end := time.Now()
		evs, _ := next(web)
		if len(evs) != 3 {
			t.Fatalf("%d events, want 3 (2 tcp connects, 1 udp datagram): %+v", len(evs), evs)
		}
		want := []struct {
			id      uint32
			vip     string
			proto   lb.Proto
			connect bool
		}{{dead4, "203.0.113.11:80", lb.ProtoTCP, true}, {dead4, "203.0.113.11:80", lb.ProtoTCP, true}, {dead6, "[2001:db8:f::11]:53", lb.ProtoUDP, false}}
		for i, ev := range evs {
			w := want[i]
			if ev.Kind != KindNoBackend || ev.VIPID != w.id || ev.VIP != netip.MustParseAddrPort(w.vip) ||
				ev.Proto != uint8(w.proto) || ev.Connect != w.connect || ev.BackendID != 0 {
				t.Errorf("event %d: %+v, want no backend for vip %d %s proto %d connect %v", i, ev, w.id, w.vip, w.proto, w.connect)
			}
			if ev.Comm != "socklb.test" || ev.PID == 0 || ev.CgroupID == 0 {
				t.Errorf("event %d: client %q pid %d cgroup %d", i, ev.Comm, ev.PID, ev.CgroupID)
			}
			// The wall clock is read a moment apart from the monotonic one the event
			// carries: a millisecond of slack.
			if ev.Time.Before(start.Add(-time.Millisecond)) || ev.Time.After(end.Add(time.Millisecond)) {
				t.Errorf("event %d at %v, outside the client's run %v..%v", i, ev.Time, start, end)
			}
		}
	})
	t.Run("rate limit", func(t *testing.T) {
		r0, _, err := e.sock.MonitorLost()
		if err != nil {
			t.Fatal(err)
		}
		const rate, n = 2, 12
		if err := e.sock.SetMonitor(true, rate); err != nil {
			t.Fatal(err)
		}
		// The one-second windows may have started before: wait one out so every CPU's
		// window opens with this client.
		time.Sleep(1100 * time.Millisecond)
		e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.11", Port: 80, Count: n}, true)
		e.client(mark, true)
		evs, _ := next(web)
		r1, _, err := e.sock.MonitorLost()
		if err != nil {
			t.Fatal(err)
		}
		cpus := 0
		seen := map[uint32]bool{}
		for _, ev := range evs {
			if !seen[ev.CPU] {
				seen[ev.CPU] = true
				cpus++
			}
		}
		if len(evs) == 0 || len(evs) > rate*cpus || uint64(len(evs))+(r1-r0) != n {
			t.Fatalf("%d events on %d cpus and %d lost to the rate, want at most %d per cpu and %d in all", len(evs), cpus, r1-r0, rate, n)
		}
	})
}
