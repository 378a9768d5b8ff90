package monitor

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// addrs compares addresses by value.
var addrs = cmpopts.EquateComparable(netip.Addr{}, netip.AddrPort{}, netip.Prefix{})

func drop(reason, vip string, n int) Event {
	return Event{
		Time: time.Unix(1700000000, int64(n)*1000).UTC(), Source: "xdp", Type: Drop, Reason: reason, Proto: "udp", VIP: vip,
		Src: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), uint16(n)), Dst: netip.MustParseAddrPort("203.0.113.10:53"), Len: 60,
	}
}

func flow(n int) Event {
	e := drop(ReasonNewFlow, "web", n)
	e.Type = Flow
	e.Backend = netip.MustParseAddr("198.51.100.11")
	return e
}

// recv takes what is queued on a subscription now.
func recv(s *Subscription) []Event {
	var out []Event
	for {
		select {
		case e, ok := <-s.Events():
			if !ok {
				return out
			}
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestHubFansOutFiltered(t *testing.T) {
	h := NewHub(10)
	all := h.Subscribe(Filter{})
	web := h.Subscribe(Filter{VIP: "web", Type: Drop})
	deny := h.Subscribe(Filter{Reason: "drop_deny"})
	defer all.Close()
	defer web.Close()
	defer deny.Close()
	evs := []Event{drop("drop_deny", "web", 1), drop("drop_malformed", "dns", 2), flow(3), drop("drop_deny", "", 4)}
	for _, e := range evs {
		h.Publish(e)
	}
	for _, tc := range []struct {
		name string
		s    *Subscription
		want []Event
	}{
		{"all", all, evs},
		{"web drops", web, []Event{evs[0]}},
		{"deny", deny, []Event{evs[0], evs[3]}},
	} {
		if diff := cmp.Diff(tc.want, recv(tc.s), addrs); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	if l := h.Lost(); l != (Lost{}) {
		t.Errorf("Lost %+v, want none", l)
	}
}

// TestHubSlowWatcher: a watcher that does not read loses the events beyond its queue,
// counted, and neither the publisher nor the other watchers wait for it.
func TestHubSlowWatcher(t *testing.T) {
	h := NewHub(0)
	slow := h.Subscribe(Filter{})
	defer slow.Close()
	fast := h.Subscribe(Filter{})
	defer fast.Close()
	const n = QueueLen + 100
	got := 0
	for i := range n {
		h.Publish(drop("drop_deny", "web", i)) // would block here if Publish waited for slow
		got += len(recv(fast))
	}
	if got != n {
		t.Errorf("the reading watcher got %d of %d", got, n)
	}
	if q := len(recv(slow)); q != QueueLen {
		t.Errorf("the slow watcher has %d queued, want %d", q, QueueLen)
	}
	if slow.Lost() != 100 {
		t.Errorf("slow watcher Lost %d, want 100", slow.Lost())
	}
	h.SetSourceLost(Lost{RateLimited: 7, RingFull: 3, SlowClient: 1})
	if l := h.Lost(); l != (Lost{RateLimited: 7, RingFull: 3, SlowClient: 101}) {
		t.Errorf("Lost %+v", l)
	}
}

func TestHubRecentDrops(t *testing.T) {
	h := NewHub(3)
	if len(h.RecentDrops()) != 0 {
		t.Fatal("a new hub has recent drops")
	}
	var want []Event
	for i := range 5 {
		e := drop("drop_deny", "web", i)
		h.Publish(e)
		h.Publish(flow(100 + i)) // flows are not kept
		want = append(want, e)
		if i == 1 {
			if diff := cmp.Diff(want, h.RecentDrops(), addrs); diff != "" {
				t.Errorf("before the ring is full (-want +got):\n%s", diff)
			}
		}
	}
	if diff := cmp.Diff(want[2:], h.RecentDrops(), addrs); diff != "" {
		t.Errorf("the last 3, oldest first (-want +got):\n%s", diff)
	}
	NewHub(0).Publish(drop("drop_deny", "web", 1)) // keeps none, must not panic
}

func TestHubWant(t *testing.T) {
	h := NewHub(0)
	var calls []Want
	h.OnWant(func(w Want) { calls = append(calls, w) })
	drops := h.Subscribe(Filter{Type: Drop})
	f100 := h.Subscribe(Filter{Type: Flow, SampleEvery: 100})
	f10 := h.Subscribe(Filter{SampleEvery: 10})
	f10again := h.Subscribe(Filter{Type: Flow, SampleEvery: 10}) // no change: no call
	if h.Watchers() != 4 {
		t.Errorf("Watchers %d, want 4", h.Watchers())
	}
	f10.Close()
	f10again.Close()
	f10again.Close() // twice is fine
	f100.Close()
	drops.Close()
	want := []Want{{}, {Flows: true, SampleEvery: 100}, {Flows: true, SampleEvery: 10}, {Flows: true, SampleEvery: 100}, {}}
	if diff := cmp.Diff(want, calls, addrs); diff != "" {
		t.Errorf("OnWant calls (-want +got):\n%s", diff)
	}
	all := h.Subscribe(Filter{})
	if w := h.Want(); w != (Want{Flows: true, SampleEvery: 1}) {
		t.Errorf("a watcher of everything: Want %+v", w)
	}
	all.Close()
}

// TestHubSampling: with the source sending one flow in 10, a watcher asking for one in 100
// takes one in 10 of those, one asking for one in 10 takes all.
func TestHubSampling(t *testing.T) {
	h := NewHub(0)
	s10 := h.Subscribe(Filter{Type: Flow, SampleEvery: 10})
	s100 := h.Subscribe(Filter{Type: Flow, SampleEvery: 100})
	s7 := h.Subscribe(Filter{SampleEvery: 25}) // not a multiple: one in 2 of what comes
	defer s10.Close()
	defer s100.Close()
	defer s7.Close()
	for i := range 100 {
		h.Publish(flow(i))
	}
	h.Publish(drop("drop_deny", "web", 1)) // drops are never sampled
	for i := range 5 {                     // the socket LB's connects come sampled by its own setting
		e := flow(i)
		e.Source, e.Reason = "socket", ReasonSockConnect
		h.Publish(e)
	}
	if n := len(recv(s10)); n != 105 {
		t.Errorf("1 in 10: got %d of 105 events, want all", n)
	}
	if n := len(recv(s100)); n != 15 {
		t.Errorf("1 in 100: got %d of 100 events, want 10 and the 5 socket connects", n)
	}
	if n := len(recv(s7)); n != 56 {
		t.Errorf("1 in 25: got %d, want 50 flows, the drop and the 5 socket connects", n)
	}
}

// TestHubClose: closing the hub ends every watcher's channel; later watchers start closed.
func TestHubClose(t *testing.T) {
	h := NewHub(1)
	var last Want
	h.OnWant(func(w Want) { last = w })
	s := h.Subscribe(Filter{})
	h.Close()
	if _, ok := <-s.Events(); ok {
		t.Error("a watcher's channel is open after Close")
	}
	s.Close()
	if _, ok := <-h.Subscribe(Filter{}).Events(); ok {
		t.Error("a watcher after Close is open")
	}
	h.Publish(drop("drop_deny", "web", 1))
	if len(h.RecentDrops()) != 0 || last != (Want{}) {
		t.Errorf("after Close: %d recent drops, want %+v", len(h.RecentDrops()), last)
	}
}

// TestHubConcurrent runs publishers, watchers coming and going and a hub Close at once
// (for go test -race).
func TestHubConcurrent(t *testing.T) {
	h := NewHub(16)
	var wants sync.Mutex
	var n int
	h.OnWant(func(Want) { wants.Lock(); n++; wants.Unlock() })
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for i := range 2000 {
				if i%2 == 0 {
					h.Publish(drop(fmt.Sprint("drop_", p), "web", i))
				} else {
					h.Publish(flow(i))
				}
			}
		})
	}
	for w := range 4 {
		wg.Go(func() {
			for i := range 50 {
				s := h.Subscribe(Filter{SampleEvery: uint32(w*10 + i + 1)})
				recv(s)
				_ = h.RecentDrops()
				_ = h.Lost()
				s.Close()
			}
		})
	}
	wg.Go(func() {
		time.Sleep(time.Millisecond)
		h.Close()
	})
	wg.Wait()
}
