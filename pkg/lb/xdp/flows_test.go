package xdp

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/lb"
)

// A UDP entry's age is in the program's clock units (2^CT_TIME_SHIFT ns), across the
// 32-bit wrap of its stored time, and it is expired past udp_timeout as the program
// decides it (strictly more ticks than the timeout's).
func TestUDPAge(t *testing.T) {
	const tick = uint64(1) << ctTimeShift
	seenAt := func(ns uint64) uint64 { return 7 | uint64(uint32(ns>>ctTimeShift))<<ctSeenShift }
	for _, c := range []struct {
		name        string
		seen, now   uint64
		timeout     time.Duration
		wantAge     time.Duration
		wantExpired bool
	}{
		{"just seen", seenAt(100 * tick), 100 * tick, 30 * time.Second, 0, false},
		{"ten ticks ago", seenAt(100 * tick), 110*tick + 5, 30 * time.Second, time.Duration(10 * tick), false},
		{"at the timeout: not yet", seenAt(0), uint64(30*time.Second) / tick * tick, 30 * time.Second, time.Duration(uint64(30*time.Second) / tick * tick), false},
		{"one tick past", seenAt(0), (uint64(30*time.Second)/tick + 1) * tick, 30 * time.Second, time.Duration((uint64(30*time.Second)/tick + 1) * tick), true},
		{"across the wrap of the stored time", seenAt((1<<32 - 2) * tick), (1<<32 + 3) * tick, 30 * time.Second, time.Duration(5 * tick), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			age, expired := udpAge(c.seen, c.now, c.timeout)
			if age != c.wantAge || expired != c.wantExpired {
				t.Errorf("udpAge: %v expired %v, want %v expired %v", age, expired, c.wantAge, c.wantExpired)
			}
		})
	}
}

// A way is found only if its digest and claim read the same in both reads of the
// bucket; a touch (marks, time) between the reads is not a rewrite.
func TestCtFindStable(t *testing.T) {
	const d = 0xfeed
	b := xdplbCtBucket{Way: [4]xdplbCtWay{{Digest: 1, State: 2}, {Digest: d, State: 3 | 1<<ctGenShift}}}
	touched := b
	touched.Way[1].State |= ctRef | ctEst | 5<<ctSeenShift
	rewritten := b
	rewritten.Way[1].State = 3 | 2<<ctGenShift // same backend, next generation
	busy := b
	busy.Way[1].State = ctBusy | 2<<ctGenShift
	for _, c := range []struct {
		name     string
		again    xdplbCtBucket
		wantWay  int
		wantBusy int
	}{
		{"unchanged", b, 1, 0},
		{"touched between the reads", touched, 1, 0},
		{"rewritten back to the same backend", rewritten, -1, 0},
		{"being written", busy, -1, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			way, state, nbusy := ctFindStable(&b, &c.again, d)
			if way != c.wantWay || nbusy != c.wantBusy || (way >= 0 && state != b.Way[1].State) {
				t.Errorf("way %d state %#x busy %d, want way %d busy %d", way, state, nbusy, c.wantWay, c.wantBusy)
			}
		})
	}
}

// The state word's fields, and the outcome in the program's order of checks.
func TestFlowEntryDescribe(t *testing.T) {
	var e FlowEntry
	e.Flow.Proto = lb.ProtoTCP
	e.describeState(42|ctRef|ctEst|9<<ctGenShift, 1<<40, 30*time.Second)
	if e.BackendID != 42 || !e.Ref || !e.Est || e.Busy || e.Generation != 9 || e.HasAge {
		t.Errorf("tcp state: %+v", e)
	}
	e = FlowEntry{}
	e.Flow.Proto = lb.ProtoUDP
	e.describeState(42|uint64(3)<<ctSeenShift, 5<<ctTimeShift, 30*time.Second)
	if !e.HasAge || e.Age != time.Duration(2<<ctTimeShift) || e.Expired || e.Ref || e.Est {
		t.Errorf("udp state: %+v", e)
	}

	for _, c := range []struct {
		name string
		e    FlowEntry
		want FlowOutcome
	}{
		{"no vip", FlowEntry{Tracked: true, BackendLive: true}, FlowNoVIP},
		{"untracked", FlowEntry{VIPFound: true}, FlowUntracked},
		{"backend gone", FlowEntry{VIPFound: true, Tracked: true, MembersChecked: true}, FlowBackendGone},
		{"not a member", FlowEntry{VIPFound: true, Tracked: true, BackendLive: true, MembersChecked: true}, FlowNotMember},
		{"not a member, check off", FlowEntry{VIPFound: true, Tracked: true, BackendLive: true}, FlowFollowed},
		{"udp expired", FlowEntry{VIPFound: true, Tracked: true, BackendLive: true, Member: true, MembersChecked: true, Expired: true}, FlowUDPExpired},
		{"followed", FlowEntry{VIPFound: true, Tracked: true, BackendLive: true, Member: true, MembersChecked: true}, FlowFollowed},
	} {
		if got := c.e.outcome(); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestCheckFlow(t *testing.T) {
	for _, c := range []struct {
		name string
		f    Flow
		ok   bool
	}{
		{"tcp v4", Flow{Src: mustAddr("198.51.100.7"), Dst: mustAddr("203.0.113.10"), Sport: 40000, Dport: 80, Proto: lb.ProtoTCP}, true},
		{"udp v6", Flow{Src: mustAddr("2001:db8::7"), Dst: mustAddr("2001:db8::10"), Sport: 40000, Dport: 53, Proto: lb.ProtoUDP}, true},
		{"mixed families", Flow{Src: mustAddr("2001:db8::7"), Dst: mustAddr("203.0.113.10"), Proto: lb.ProtoTCP}, false},
		{"no source", Flow{Dst: mustAddr("203.0.113.10"), Proto: lb.ProtoTCP}, false},
		{"icmp", Flow{Src: mustAddr("198.51.100.7"), Dst: mustAddr("203.0.113.10"), Proto: 1}, false},
		{"zone", Flow{Src: mustAddr("fe80::1%eth0"), Dst: mustAddr("fe80::2"), Proto: lb.ProtoTCP}, false},
	} {
		err := checkFlow(c.f)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrFlow)) {
			t.Errorf("%s: %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// The tally: fill levels, marks, UDP entries by their time, busy ways not counted.
func TestCtTally(t *testing.T) {
	now := uint64(1000 * time.Second)
	fresh := uint64(uint32(now>>ctTimeShift)) << ctSeenShift
	stale := uint64(uint32((now-uint64(time.Minute))>>ctTimeShift)) << ctSeenShift
	buckets := []xdplbCtBucket{
		{},
		{Way: [4]xdplbCtWay{{Digest: 1, State: 1}}},                                                // one-packet tcp
		{Way: [4]xdplbCtWay{{Digest: 2, State: 1 | ctEst}, {Digest: 3, State: 2 | ctEst | ctRef}}}, // idle, in use
		{Way: [4]xdplbCtWay{{Digest: 4, State: 2 | ctEst | fresh}, {Digest: 5, State: 2 | stale}, {State: ctBusy}, {Digest: 6, State: 3}}},
		{Way: [4]xdplbCtWay{{Digest: 7, State: 1}, {Digest: 8, State: 1}, {Digest: 9, State: 1}, {Digest: 10, State: 1}}},
	}
	s := FlowSummary{ByBackend: map[uint32]int{}}
	tally := ctTally{s: &s, now: now, udpTimeout: 30 * time.Second}
	for i := range buckets {
		tally.add(&buckets[i])
	}
	want := FlowSummary{Entries: 10, Buckets: 5, BucketFill: [5]int{1, 1, 1, 1, 1}, BusyWays: 1,
		Established: 3, Referenced: 1, OnePacket: 7, Timed: 2, UDPExpired: 1,
		ByBackend: map[uint32]int{1: 6, 2: 3, 3: 1}}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("tally (-want +got):\n%s", diff)
	}
}

// Entries go to the VIP that alone has their backend; a shared backend's entries count
// for every VIP that has it, as a range; a backend no VIP has is nobody's.
func TestVIPFlows(t *testing.T) {
	s := FlowSummary{
		ByBackend: map[uint32]int{1: 10, 2: 5, 3: 7, 9: 2},
		Members:   map[uint32][]uint32{1: {0}, 2: {0, 1}, 3: {1}},
	}
	got, orphans := s.VIPFlows()
	want := map[uint32]VIPFlows{0: {Own: 10, Shared: 5}, 1: {Own: 7, Shared: 5}}
	if diff := cmp.Diff(want, got); diff != "" || orphans != 2 {
		t.Errorf("VIPFlows (-want +got):\n%s\norphans %d, want 2", diff, orphans)
	}
}
