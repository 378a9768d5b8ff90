package xdp

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/lb"
)

// dpSnapshot is every map a lookup could disturb: conntrack and the counters.
type dpSnapshot struct {
	CT     []xdplbCtBucket
	Stats  map[uint32][]uint64
	VIPs   map[uint32][]xdplbVipCounters
	Pairs  map[uint32][]xdplbBackendCounters
	Guards map[uint32][]xdplbVipGuard
}

func perCPU[V any](t *testing.T, m *ebpf.Map) map[uint32][]V {
	t.Helper()
	out := map[uint32][]V{}
	var k uint32
	var v []V
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = slices.Clone(v)
	}
	if err := it.Err(); err != nil {
		t.Fatalf("read %v: %v", m, err)
	}
	return out
}

func snapshot(t *testing.T, d *Dataplane) dpSnapshot {
	t.Helper()
	var s dpSnapshot
	if err := ctWalk(d.objs.Conntrack, func(b *xdplbCtBucket) { s.CT = append(s.CT, *b) }); err != nil {
		t.Fatal(err)
	}
	s.Stats = perCPU[uint64](t, d.objs.Stats)
	s.VIPs = perCPU[xdplbVipCounters](t, d.objs.VipStats)
	s.Pairs = perCPU[xdplbBackendCounters](t, d.objs.PairStats)
	s.Guards = perCPU[xdplbVipGuard](t, d.objs.VipGuards)
	return s
}

// sentFlow is a flow the test sent, and what conntrack must hold for it.
type sentFlow struct {
	p       pkt
	vip     lb.VIPKey
	backend uint32
	est     bool // a later packet found the entry
}

// l4lb flows on the real program: flows made by real packets are found with the backend
// the ring gave them, their marks and (UDP) age; a tuple never sent is not; the summary
// counts what was sent; neither changes a byte of conntrack or of a counter. Then the
// lookup's verdicts (not a member, backend gone, UDP expired) are the program's: the
// next packet of each flow is counted and re-hashed as the lookup said.
func TestPrivilegedFlowsLookupAndSummary(t *testing.T) {
	// Long enough that the flows sent first are still fresh when looked up in a TCG VM
	// (sending them all takes about 1.2 s there); the idle case sleeps past it.
	const udpTimeout = 5 * time.Second
	r := newRig(t, Options{ConntrackSize: 4096, UDPTimeout: udpTimeout, MemberGrace: -1})
	web := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12")}
	other := lb.VIP{Key: key("203.0.113.20", 80, tcp), Backends: backends(1, "198.51.100.11")} // shares backend 1
	dns := lb.VIP{Key: key("2001:db8::10", 53, udp), Backends: backends(3, "2001:db8:1::13", "2001:db8:1::14")}
	for _, v := range []lb.VIP{web, other, dns} {
		r.setVIP(v)
	}
	var sent []sentFlow
	send := func(p pkt, k lb.VIPKey, packets ...string) {
		t.Helper()
		for _, flags := range packets {
			if ret, _ := r.run(with(p, func(q *pkt) { q.flags = flags }).build(t)); ret != xdpTx {
				t.Fatalf("%v %q: verdict %d", p.flow(), flags, ret)
			}
		}
		sent = append(sent, sentFlow{p: p, vip: k, backend: r.ringBackend(k, p.flow()), est: len(packets) > 1})
	}
	for i := range 20 {
		p := pkt{src: fmt.Sprintf("198.51.100.%d", 100+i), dst: "203.0.113.10", proto: tcp, sport: uint16(40000 + i), dport: 80}
		if i < 12 {
			send(p, web.Key, "S", "A")
		} else {
			send(p, web.Key, "S") // a SYN alone: a one-packet entry
		}
	}
	for i := range 5 {
		send(pkt{src: cli4, dst: "203.0.113.20", proto: tcp, sport: uint16(50000 + i), dport: 80}, other.Key, "S", "A")
	}
	for i := range 10 {
		send(pkt{src: fmt.Sprintf("2001:db8:c::%x", 0x100+i), dst: "2001:db8::10", proto: udp, sport: uint16(33000 + i), dport: 53}, dns.Key, "", "")
	}

	before := snapshot(t, r.d)
	n := r.d.objs.Conntrack.MaxEntries()
	for _, s := range sent {
		e, err := r.d.FlowLookup(s.p.flow())
		if err != nil {
			t.Fatal(err)
		}
		f := s.p.flow()
		wantSearched := 2
		if e.Bucket == ctBucketIndex(e.Digest, n, 0) {
			wantSearched = 1
		}
		if !e.Tracked || e.BackendID != s.backend || !e.BackendLive || e.Backend != r.addrs[s.backend] ||
			!e.VIPFound || e.VIP != s.vip || !e.Member || !e.MembersChecked || e.Outcome != FlowFollowed ||
			e.RingBackend != s.backend || e.RingAddr != r.addrs[s.backend] || e.Searched != wantSearched || e.Busy {
			t.Errorf("%v: %+v\nwant tracked to backend %d of %s, followed, %d bucket(s) searched", f, e, s.backend, s.vip, wantSearched)
		}
		if e.Est != s.est || e.Ref != s.est {
			t.Errorf("%v: marks est %v ref %v, want %v", f, e.Est, e.Ref, s.est)
		}
		if udpFlow := f.Proto == udp; e.HasAge != udpFlow || (udpFlow && (e.Age >= udpTimeout || e.Expired)) {
			t.Errorf("%v: age %v (has %v, expired %v); want one below %v for udp only", f, e.Age, e.HasAge, e.Expired, udpTimeout)
		}
	}
	never := []struct {
		f    Flow
		vip  lb.VIPKey
		want FlowOutcome
	}{
		{pkt{src: "192.0.2.99", dst: "203.0.113.10", proto: tcp, sport: 1234, dport: 80}.flow(), web.Key, FlowUntracked},
		{pkt{src: "2001:db8:c::99", dst: "2001:db8::10", proto: udp, sport: 1234, dport: 53}.flow(), dns.Key, FlowUntracked},
		// A sent flow's tuple with the protocol changed is another flow, to no VIP.
		{Flow{Src: sent[0].p.flow().Src, Dst: sent[0].p.flow().Dst, Sport: sent[0].p.sport, Dport: 80, Proto: udp}, lb.VIPKey{}, FlowNoVIP},
		{pkt{src: cli4, dst: "203.0.113.99", proto: tcp, sport: 1234, dport: 80}.flow(), lb.VIPKey{}, FlowNoVIP},
	}
	for _, c := range never {
		e, err := r.d.FlowLookup(c.f)
		if err != nil {
			t.Fatal(err)
		}
		if e.Tracked || e.Searched != 2 || e.Outcome != c.want || e.VIP != c.vip {
			t.Errorf("never sent %v: %+v, want untracked, both buckets searched, %s", c.f, e, c.want)
		}
		if c.want == FlowUntracked && e.RingBackend != r.ringBackend(c.vip, c.f) {
			t.Errorf("never sent %v: ring backend %d, want %d", c.f, e.RingBackend, r.ringBackend(c.vip, c.f))
		}
	}

	s, err := r.d.FlowSummary()
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, r.d)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Fatalf("lookups and the summary changed the maps (-before +after):\n%s", diff)
	}
	t.Logf("summary of %d entries in %d buckets: walk %v", s.Entries, s.Buckets, s.Walk)

	wantBy := map[uint32]int{}
	est, udps := 0, 0
	for _, f := range sent {
		wantBy[f.backend]++
		if f.est {
			est++
		}
		if f.p.proto == udp {
			udps++
		}
	}
	count, err := r.d.ConntrackCount()
	if err != nil {
		t.Fatal(err)
	}
	filled := 0
	for ways, b := range s.BucketFill {
		filled += ways * b
	}
	if s.Entries != len(sent) || count != len(sent) || s.Capacity != int(n)*int(ctWays) || s.Buckets != int(n) ||
		filled != s.Entries || s.BucketFill[0]+s.BucketFill[1]+s.BucketFill[2]+s.BucketFill[3]+s.BucketFill[4] != int(n) {
		t.Errorf("summary: %d entries (walk counts %d), capacity %d in %d buckets, fill %v; want %d entries in %d buckets",
			s.Entries, count, s.Capacity, s.Buckets, s.BucketFill, len(sent), n)
	}
	if s.Established != est || s.Referenced != est || s.OnePacket != len(sent)-est || s.Timed != udps || s.UDPExpired != 0 || s.BusyWays != 0 {
		t.Errorf("summary marks: %+v; want %d established and referenced, %d one-packet, %d udp", s, est, len(sent)-est, udps)
	}
	if diff := cmp.Diff(wantBy, s.ByBackend); diff != "" {
		t.Errorf("entries by backend (-want +got):\n%s", diff)
	}
	stats, err := r.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ctCounters(stats), s.Counters); diff != "" || s.Counters["ct_miss"] != uint64(len(sent)) || s.Counters["ct_hit"] != uint64(est) {
		t.Errorf("counters %v (-stats +summary:\n%s); want ct_miss %d, ct_hit %d", s.Counters, diff, len(sent), est)
	}
	per, orphans := s.VIPFlows()
	wantPer := map[uint32]VIPFlows{
		r.vipID(web.Key):   {Own: wantBy[2], Shared: wantBy[1]},
		r.vipID(other.Key): {Shared: wantBy[1]},
		r.vipID(dns.Key):   {Own: wantBy[3] + wantBy[4]},
	}
	if diff := cmp.Diff(wantPer, per); diff != "" || orphans != 0 {
		t.Errorf("entries per vip (-want +got):\n%s\norphans %d", diff, orphans)
	}

	// The lookup's verdicts are the program's. Each case changes the VIPs, looks the
	// flow up, then sends its next packet: the counter the lookup named goes up by one,
	// and the entry then names the ring's backend.
	pick := func(k lb.VIPKey, backend uint32) sentFlow {
		for _, f := range sent {
			if f.vip == k && f.backend == backend && f.est {
				return f
			}
		}
		t.Fatalf("no established flow of %s on backend %d", k, backend)
		return sentFlow{}
	}
	for _, c := range []struct {
		name    string
		change  func()
		flow    sentFlow
		want    FlowOutcome
		counter string
	}{
		{"backend left the vip", func() { r.setVIP(lb.VIP{Key: web.Key, Backends: web.Backends[:1]}) }, pick(web.Key, 2), FlowNotMember, "ct_not_member"},
		{"backend deleted", func() {
			r.setVIP(lb.VIP{Key: dns.Key, Backends: dns.Backends[:1]})
			if err := r.d.DeleteBackend(4); err != nil {
				t.Fatal(err)
			}
		}, pick(dns.Key, 4), FlowBackendGone, "ct_rehash"},
		{"udp idle past the timeout", func() { time.Sleep(udpTimeout + 300*time.Millisecond) }, pick(dns.Key, 3), FlowUDPExpired, "ct_udp_expired"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.change()
			f := c.flow.p.flow()
			e, err := r.d.FlowLookup(f)
			if err != nil {
				t.Fatal(err)
			}
			ring := r.ringBackend(c.flow.vip, f)
			if e.Outcome != c.want || e.BackendID != c.flow.backend || e.RingBackend != ring {
				t.Fatalf("%v: outcome %s, backend %d, ring %d; want %s, %d, ring %d", f, e.Outcome, e.BackendID, e.RingBackend, c.want, c.flow.backend, ring)
			}
			before, _ := r.d.Stats()
			flags := "A"
			if f.Proto == udp {
				flags = ""
			}
			if ret, _ := r.run(with(c.flow.p, func(q *pkt) { q.flags = flags }).build(t)); ret != xdpTx {
				t.Fatalf("verdict %d", ret)
			}
			after, _ := r.d.Stats()
			if d := after[c.counter] - before[c.counter]; d != 1 {
				t.Errorf("%s went up by %d, want 1", c.counter, d)
			}
			e, err = r.d.FlowLookup(f)
			if err != nil || e.Outcome != FlowFollowed || e.BackendID != ring {
				t.Errorf("after the packet: %s to backend %d (%v), want followed to %d", e.Outcome, e.BackendID, err, ring)
			}
		})
	}
	s, err = r.d.FlowSummary()
	if err != nil {
		t.Fatal(err)
	}
	// Every dns entry is past the timeout now but the one the last packet refreshed.
	if s.UDPExpired != udps-1 {
		t.Errorf("summary: %d udp entries expired, want %d", s.UDPExpired, udps-1)
	}
}

// The summary's walk on the default table (1,048,576 entries, 16 MiB), a quarter full
// (the size's design point), written directly. The figure is logged, not asserted.
func TestPrivilegedFlowsWalkDefaultTable(t *testing.T) {
	r := newRig(t, Options{})
	m := r.d.objs.Conntrack
	n := m.MaxEntries()
	buckets := make([]xdplbCtBucket, n)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range ConntrackCapacity(m) / 4 {
		d := rnd.Uint64()
		ctPlace(&buckets[ctBucketIndex(d, n, 0)], &buckets[ctBucketIndex(d, n, 1)], d, uint64(1+i%64)|ctRef|ctEst)
	}
	want := 0
	for _, b := range buckets {
		for _, w := range b.Way {
			if w.State&ctBackendMask != 0 {
				want++
			}
		}
	}
	keys := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	for i := 0; i < len(keys); i += 65536 {
		j := min(i+65536, len(keys))
		if _, err := m.BatchUpdate(keys[i:j], buckets[i:j], nil); err != nil {
			t.Fatal(err)
		}
	}
	var walks, totals []time.Duration
	for range 5 {
		start := time.Now()
		s, err := r.d.FlowSummary()
		totals = append(totals, time.Since(start))
		if err != nil {
			t.Fatal(err)
		}
		if s.Entries != want {
			t.Fatalf("summary counts %d entries, want %d", s.Entries, want)
		}
		walks = append(walks, s.Walk)
	}
	slices.Sort(walks)
	slices.Sort(totals)
	t.Logf("FlowSummary of %d entries in a table of %d (%d buckets): conntrack walk min %v median %v max %v; whole summary median %v",
		want, ConntrackCapacity(m), n, walks[0], walks[2], walks[4], totals[2])
}
