package xdp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/bpfobj"
	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

// ctPlace is the program's replacement rule (bpf/conntrack.h ct_insert).
func TestCtPlace(t *testing.T) {
	const (
		est  = ctRef | ctEst // a flow whose later packets found it
		idle = ctEst         // found once, not since its bucket was last full
		one  = 0             // a one-packet flow's entry (a spoofed SYN)
	)
	fill := func(digests []uint64, states ...uint64) xdplbCtBucket {
		var b xdplbCtBucket
		for i, st := range states {
			b.Way[i] = xdplbCtWay{Digest: digests[i], State: 1 + uint64(i) | st}
		}
		return b
	}
	d1 := []uint64{11, 12, 13, 14}
	d2 := []uint64{21, 22, 23, 24}
	where := func(b1, b2 *xdplbCtBucket, digest uint64) string {
		for half, b := range []*xdplbCtBucket{b1, b2} {
			for i, w := range b.Way {
				if w.Digest == digest && w.State&ctBackendMask == 9 {
					return fmt.Sprintf("%d.%d", half+1, i)
				}
			}
		}
		return "nowhere"
	}
	for _, c := range []struct {
		name   string
		b1, b2 xdplbCtBucket
		digest uint64
		want   string // bucket.way
		ref1   bool   // the first bucket's ways keep CT_REF
	}{
		{"empty: first bucket", xdplbCtBucket{}, xdplbCtBucket{}, 99, "1.0", true},
		{"a free way in the first bucket: the second is not read", fill(d1, est, est, est), fill(d2, one), 99, "1.3", true},
		{"first bucket of established flows: a free way in the second", fill(d1, est, est, est, est), fill(d2, est), 99, "2.1", true},
		{"a one-packet entry goes before an established one", fill(d1, est, est, one, est), fill(d2, est, est, est, est), 99, "1.2", true},
		{"an empty way goes before a one-packet entry", fill(d1, est, one, est, est), fill(d2, est, est), 99, "2.2", true},
		{"a one-packet entry goes before an idle one", fill(d1, est, idle, est, est), fill(d2, est, est, one, est), 99, "2.2", true},
		{"an idle entry goes before one still in use", fill(d1, est, est, est, idle), fill(d2, est, est, est, est), 99, "1.3", true},
		{"the flow's own way, even in use", fill(d1, est, est, est, est), fill(d2), 13, "1.2", true},
		{"all in use: second chance, the way the digest names goes", fill(d1, est, est, est, est), fill(d2, est, est, est, est), 99 | 1<<40, "1.3", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b1, b2 := c.b1, c.b2
			ctPlace(&b1, &b2, c.digest, 9)
			if got := where(&b1, &b2, c.digest); got != c.want {
				t.Fatalf("placed in %s, want %s\nfirst  %+v\nsecond %+v", got, c.want, b1.Way, b2.Way)
			}
			for i, w := range b1.Way {
				if w.Digest == c.digest || w.State&ctBackendMask == 0 {
					continue
				}
				if had := c.b1.Way[i].State&ctRef != 0; had && (w.State&ctRef != 0) != c.ref1 {
					t.Errorf("first bucket way %d: CT_REF %v, want %v", i, w.State&ctRef != 0, c.ref1)
				}
			}
		})
	}
	// b2 == b1: one bucket, read once.
	b := fill(d1, est, est, est, est)
	ctPlace(&b, &b, 99|2<<32, 9)
	if b.Way[3].Digest != 99|2<<32 {
		t.Fatalf("one bucket for both halves: %+v", b.Way)
	}
}

// The Go mirror of the digest and bucket index is what the program computes: a flow the
// program tracked is found by ConntrackLookup, over IPv4 and IPv6, TCP and UDP.
func TestPrivilegedCtDigestMatchesProgram(t *testing.T) {
	r := newRig(t, Options{ConntrackSize: 4096})
	web4 := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12")}
	dns6 := lb.VIP{Key: key("2001:db8::10", 53, udp), Backends: backends(3, "2001:db8:1::11", "2001:db8:1::12")}
	r.setVIP(web4)
	r.setVIP(dns6)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		p := pkt{src: fmt.Sprintf("192.0.2.%d", 1+rnd.IntN(250)), dst: "203.0.113.10", proto: tcp, sport: uint16(1024 + rnd.IntN(60000)), dport: 80, flags: "S"}
		k := web4.Key
		if i%2 == 1 {
			p = pkt{src: fmt.Sprintf("2001:db8:2::%x", 1+rnd.IntN(65000)), dst: "2001:db8::10", proto: udp, sport: uint16(1024 + rnd.IntN(60000)), dport: 53}
			k = dns6.Key
		}
		if ret, _ := r.run(p.build(t)); ret != xdpTx {
			t.Fatalf("flow %d: verdict %d", i, ret)
		}
		got, ok, err := r.d.ConntrackLookup(p.flow())
		if err != nil || !ok || got != r.ringBackend(k, p.flow()) {
			t.Fatalf("flow %d %v: conntrack (%d, %v, %v), want %d", i, p.flow(), got, ok, err, r.ringBackend(k, p.flow()))
		}
	}
}

// flowsInBucket returns n TCP flows to 203.0.113.10:80 from 192.0.2.7 whose first
// conntrack bucket (of a table of the given buckets) is bucket, and if both is set,
// whose second bucket is too.
func flowsInBucket(tb testing.TB, n int, buckets, bucket uint32, both bool) []pkt {
	var out []pkt
	for src := 1; src < 255 && len(out) < n; src++ {
		for port := uint32(1024); len(out) < n && port < 65536; port++ {
			p := pkt{src: fmt.Sprintf("192.0.2.%d", src), dst: "203.0.113.10", proto: tcp, sport: uint16(port), dport: 80, flags: "S"}
			d := ctDigest(p.flow())
			if ctBucketIndex(d, buckets, 0) == bucket && (!both || ctBucketIndex(d, buckets, 1) == bucket) {
				out = append(out, p)
			}
		}
	}
	if len(out) < n {
		tb.Fatalf("found %d flows for bucket %d, want %d", len(out), bucket, n)
	}
	return out
}

// A SYN flood from spoofed sources does not evict established flows: its entries never
// see a second packet, so the flood replaces its own entries, even in a bucket full of
// established flows (the flood's SYNs go to their second bucket).
func TestPrivilegedConntrackFloodKeepsEstablishedFlows(t *testing.T) {
	r := newRig(t, Options{ConntrackSize: 1024})
	buckets := r.d.objs.Conntrack.MaxEntries()
	web := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")}
	r.setVIP(web)
	// Eight established flows whose first bucket is bucket 3: four fill it, four go to
	// their second buckets.
	est := flowsInBucket(t, 8, buckets, 3, false)
	for _, p := range est {
		for _, flags := range []string{"S", "A"} { // the ACK marks the entry established
			if ret, _ := r.run(with(p, func(q *pkt) { q.flags = flags }).build(t)); ret != xdpTx {
				t.Fatalf("%v %s: verdict %d", p.flow(), flags, ret)
			}
		}
	}
	// 20,000 SYNs from random spoofed sources and ports: about 20 for each entry.
	rnd := rand.New(rand.NewPCG(3, 4))
	frame := pkt{src: "198.51.100.200", dst: "203.0.113.10", proto: tcp, sport: 1, dport: 80, flags: "S"}.build(t)
	for range 20000 {
		frame[14+12], frame[14+13], frame[14+14], frame[14+15] = 203, 0, byte(rnd.IntN(256)), byte(rnd.IntN(256))
		frame[14+20], frame[14+21] = byte(rnd.IntN(256)), byte(rnd.IntN(256))
		ipChecksum(frame[14 : 14+20])
		if ret, _ := r.run(frame); ret != xdpTx {
			t.Fatalf("flood syn: verdict %d", ret)
		}
	}
	for _, p := range est {
		got, ok, err := r.d.ConntrackLookup(p.flow())
		if err != nil {
			t.Fatal(err)
		}
		if !ok || got != r.ringBackend(web.Key, p.flow()) {
			t.Errorf("established flow %v: conntrack (%d, %v) after the flood, want %d", p.flow(), got, ok, r.ringBackend(web.Key, p.flow()))
		}
	}
	stats, err := r.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats["ct_evicted"] != 0 {
		t.Errorf("ct_evicted %d after the flood, want 0", stats["ct_evicted"])
	}
	n, err := r.d.ConntrackCount()
	if err != nil {
		t.Fatal(err)
	}
	if n != int(buckets*ctWays) {
		t.Errorf("%d of %d entries used after the flood; the flood should have filled the table", n, buckets*ctWays)
	}
	t.Logf("after 20,000 spoofed SYNs: %d of %d entries used, all %d established flows kept", n, buckets*ctWays, len(est))
}

func ipChecksum(h []byte) {
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	h[10], h[11] = byte(^sum>>8), byte(^sum)
}

// Both CPUs insert and look up flows of one bucket at once (twelve flows whose two
// buckets are the same one, for four ways: every SYN evicts one): no packet ever leaves towards a backend other than its
// flow's, so no reader took one flow's digest with another's backend, and no writer
// left a way half written.
func TestPrivilegedConntrackConcurrentCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	r := newRig(t, Options{ConntrackSize: 1024})
	buckets := r.d.objs.Conntrack.MaxEntries()
	bes := make([]string, 12)
	for i := range bes {
		bes[i] = fmt.Sprintf("198.51.100.%d", 11+i)
	}
	web := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, bes...)}
	r.setVIP(web)
	flows := flowsInBucket(t, 12, buckets, 7, true)
	type frame struct {
		syn, ack []byte
		want     netip.Addr
	}
	frames := make([]frame, len(flows))
	distinct := map[netip.Addr]bool{}
	for i, p := range flows {
		want := r.addrs[r.ringBackend(web.Key, p.flow())]
		distinct[want] = true
		frames[i] = frame{syn: p.build(t), ack: with(p, func(q *pkt) { q.flags = "A" }).build(t), want: want}
	}
	if len(distinct) < 4 {
		t.Fatalf("the flows go to %d backends; the test needs flows of different backends in the bucket", len(distinct))
	}
	const iters = 100000
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for cpu := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs <- err
				return
			}
			rnd := rand.New(rand.NewPCG(uint64(cpu), 9))
			out := make([]byte, 256)
			for i := range iters {
				f := frames[rnd.IntN(len(frames))]
				in := f.ack
				if i%2 == 0 {
					in = f.syn
				}
				opts := &ebpf.RunOptions{Data: in, DataOut: out, Repeat: 1}
				ret, err := r.d.Program().Run(opts)
				if err != nil {
					errs <- err
					return
				}
				if ret != xdpTx {
					errs <- fmt.Errorf("cpu %d: verdict %d", cpu, ret)
					return
				}
				if got := netip.AddrFrom4([4]byte(opts.DataOut[14+16 : 14+20])); got != f.want {
					errs <- fmt.Errorf("cpu %d, packet %d: sent to %s, the flow's backend is %s", cpu, i, got, f.want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stats, err := r.d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("2 CPUs x %d packets on one bucket: ct_hit %d, ct_miss %d", iters, stats["ct_hit"], stats["ct_miss"])
}

// How many flows a table holds: n flows that all keep sending, placed by the program's
// rule into a table of 65536 ways. The figures are the ones docs/architecture.md
// (Conntrack, Sizing) gives.
func TestConntrackCapacity(t *testing.T) {
	const ways = 1 << 16
	buckets := make([]xdplbCtBucket, ctBucketCount(ways))
	nb := uint32(len(buckets))
	for _, c := range []struct {
		fill    float64
		maxLost float64 // fraction of the flows
	}{{0.25, 0.001}, {0.5, 0.01}, {0.75, 0.05}} {
		clear(buckets)
		rnd := rand.New(rand.NewPCG(7, uint64(c.fill*100)))
		n := int(c.fill * ways)
		digests := make([]uint64, n)
		for i := range digests {
			d := rnd.Uint64()
			digests[i] = d
			ctPlace(&buckets[ctBucketIndex(d, nb, 0)], &buckets[ctBucketIndex(d, nb, 1)], d, 1|ctRef|ctEst)
		}
		lost := 0
		for _, d := range digests {
			if ctFind(&buckets[ctBucketIndex(d, nb, 0)], d) == nil && ctFind(&buckets[ctBucketIndex(d, nb, 1)], d) == nil {
				lost++
			}
		}
		frac := float64(lost) / float64(n)
		t.Logf("table %.0f%% full: %d of %d flows (%.3f%%) without an entry", 100*c.fill, lost, n, 100*frac)
		if frac > c.maxLost {
			t.Errorf("%.0f%% full: %.3f%% of the flows lost their entry, want at most %.1f%%", 100*c.fill, 100*frac, 100*c.maxLost)
		}
	}
}

// The marks the program sets: a first packet writes none; a later packet that finds the
// entry marks it referenced and established, TCP and UDP alike (UDP's also when the
// packet refreshes its time).
func TestPrivilegedConntrackMarks(t *testing.T) {
	r := newRig(t, Options{ConntrackSize: 4096})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11")})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 53, udp), Backends: backends(1, "198.51.100.11")})
	state := func(f Flow) uint64 {
		t.Helper()
		_, b := ctBuckets(t, r.d, ctDigest(f))
		for half := range 2 {
			if w := ctFind(&b[half], ctDigest(f)); w != nil {
				return w.State
			}
		}
		t.Fatalf("no entry for %v", f)
		return 0
	}
	marks := func(s uint64) uint64 { return s & (ctRef | ctEst | ctBusy) }
	syn := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 41000, dport: 80, flags: "S"}
	dns := pkt{src: cli4, dst: "203.0.113.10", proto: udp, sport: 41000, dport: 53}
	for _, c := range []struct {
		name  string
		in    pkt
		sleep time.Duration
		flow  Flow
		want  uint64
	}{
		{"tcp syn", syn, 0, syn.flow(), 0},
		{"tcp ack", with(syn, func(p *pkt) { p.flags = "A" }), 0, syn.flow(), ctRef | ctEst},
		{"udp first", dns, 0, dns.flow(), 0},
		{"udp later, time refreshed", dns, 40 * time.Millisecond, dns.flow(), ctRef | ctEst},
	} {
		time.Sleep(c.sleep)
		before := uint64(0)
		if c.sleep > 0 {
			before = state(c.flow) >> ctSeenShift
		}
		if ret, _ := r.run(c.in.build(t)); ret != xdpTx {
			t.Fatalf("%s: verdict %d", c.name, ret)
		}
		s := state(c.flow)
		if marks(s) != c.want {
			t.Errorf("%s: marks %#x, want %#x", c.name, marks(s), c.want)
		}
		if c.sleep > 0 && s>>ctSeenShift == before {
			t.Errorf("%s: last seen not refreshed (%d)", c.name, before)
		}
	}
}

// A pinned LRU-hash conntrack (the layout keyed by the 5-tuple): its IPv4 and IPv6
// entries, TCP and UDP, are all found in the converted table with their backends (and UDP
// entries keep their last-seen time).
func TestPrivilegedConvertConntrackFromLRU(t *testing.T) {
	testutil.RequirePrivileged(t)
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: uint32(sizeofFlowKey), ValueSize: 16, MaxEntries: 65536, Flags: unix.BPF_F_NO_COMMON_LRU})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	rnd := rand.New(rand.NewPCG(11, 12))
	type entry struct {
		f       Flow
		backend uint32
		seen    uint64
	}
	var entries []entry
	for i := range 10000 {
		f := Flow{Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(rnd.IntN(256))}), Dst: mustAddr("203.0.113.10"), Sport: uint16(rnd.IntN(65536)), Dport: 80, Proto: tcp}
		var seen uint64
		if i%2 == 1 {
			var a [16]byte
			copy(a[:], mustAddr("2001:db8:2::").AsSlice())
			a[14], a[15] = byte(rnd.IntN(256)), byte(rnd.IntN(256))
			f = Flow{Src: netip.AddrFrom16(a), Dst: mustAddr("2001:db8::10"), Sport: uint16(rnd.IntN(65536)), Dport: 53, Proto: udp}
			seen = uint64(rnd.Int64N(1 << 50))
		}
		src, fam := bpfobj.Addr16(f.Src)
		dst, _ := bpfobj.Addr16(f.Dst)
		k := prevFlowKey{Src: src, Dst: dst, Sport: htons(f.Sport), Dport: htons(f.Dport), Proto: uint8(f.Proto), Family: fam}
		e := entry{f, uint32(1 + rnd.IntN(4095)), seen}
		if err := old.Put(&k, &prevCtEntry{LastSeenNs: seen, BackendID: e.backend}); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: uint32(sizeofCtBucket), MaxEntries: ctBucketCount(1 << 16)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	placed, displaced, err := convertConntrack(old, m)
	if err != nil || placed != len(entries) {
		t.Fatalf("convert: %d placed, %d displaced, %v; want %d placed", placed, displaced, err, len(entries))
	}
	lost := 0
	for _, e := range entries {
		got, ok, err := ConntrackLookupIn(m, e.f)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			lost++
			continue
		}
		if got != e.backend {
			t.Fatalf("%v: backend %d after conversion, want %d", e.f, got, e.backend)
		}
		d := ctDigest(e.f)
		for half := range 2 {
			var b xdplbCtBucket
			if err := m.Lookup(ctBucketIndex(d, m.MaxEntries(), half), &b); err != nil {
				t.Fatal(err)
			}
			if w := ctFind(&b, d); w != nil {
				if seen := uint32(w.State >> ctSeenShift); seen != uint32(e.seen>>24) || w.State&(ctRef|ctEst) != ctRef|ctEst {
					t.Fatalf("%v: state %#x after conversion, want seen %#x, referenced and established", e.f, w.State, uint32(e.seen>>24))
				}
				break
			}
		}
	}
	if lost != displaced {
		t.Errorf("%d entries not found, %d reported displaced", lost, displaced)
	}
	t.Logf("%d entries converted into a table of %d, %d displaced", placed, ConntrackCapacity(m), displaced)
}

// When both of a new flow's buckets hold only established flows, one of them loses its
// entry, and ct_evicted counts it.
func TestPrivilegedConntrackEvictedCounted(t *testing.T) {
	r := newRig(t, Options{ConntrackSize: 1024})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12")})
	flows := flowsInBucket(t, 5, r.d.objs.Conntrack.MaxEntries(), 9, true)
	for _, p := range flows[:4] {
		for _, flags := range []string{"S", "A"} {
			if ret, _ := r.run(with(p, func(q *pkt) { q.flags = flags }).build(t)); ret != xdpTx {
				t.Fatalf("%v %s: verdict %d", p.flow(), flags, ret)
			}
		}
	}
	count := func() uint64 {
		stats, err := r.d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return stats["ct_evicted"]
	}
	if n := count(); n != 0 {
		t.Fatalf("ct_evicted %d with a free way, want 0", n)
	}
	if ret, _ := r.run(flows[4].build(t)); ret != xdpTx {
		t.Fatalf("fifth flow: verdict %d", ret)
	}
	if n := count(); n != 1 {
		t.Errorf("ct_evicted %d after a new flow found the bucket full of established flows, want 1", n)
	}
	kept := 0
	for _, p := range flows {
		if _, ok, _ := r.d.ConntrackLookup(p.flow()); ok {
			kept++
		}
	}
	if kept != 4 {
		t.Errorf("%d of 5 flows have an entry in a 4-way bucket, want 4", kept)
	}
}
