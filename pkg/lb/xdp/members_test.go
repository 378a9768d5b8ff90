package xdp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/bpfobj"
	"github.com/l4lb/l4lb/pkg/lb"
)

// outerDst4 is the outer IPv4 destination of an encapsulated frame (untagged).
func outerDst4(tb testing.TB, out []byte) netip.Addr {
	tb.Helper()
	if len(out) < 34 || out[12] != 0x08 || out[13] != 0 {
		tb.Fatalf("not an IPv4 frame: % x", out[:min(len(out), 34)])
	}
	return netip.AddrFrom4([4]byte(out[30:34]))
}

// A VIP's conntrack entry is never followed to a backend of another VIP: VIP a's flow
// has an entry naming backend id 1; a's backend is replaced, id 1 freed and given to VIP
// b's new backend (what the id allocator did on the next pass). The flow's next packet
// must go to a backend of a, not to b's.
func TestPrivilegedConntrackDoesNotCrossVIPs(t *testing.T) {
	r := newRig(t, Options{})
	a := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: []lb.Backend{{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}}}
	r.setVIP(a)
	syn := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"}
	ack := with(syn, func(p *pkt) { p.flags, p.payload = "A", 10 })
	if v, out := r.run(syn.build(t)); v != xdpTx || outerDst4(t, out) != mustAddr("198.51.100.11") {
		t.Fatalf("syn: verdict %d", v)
	}
	if id, ok, _ := r.d.ConntrackLookup(syn.flow()); !ok || id != 1 {
		t.Fatalf("conntrack after the syn: id %d ok %v", id, ok)
	}
	// The pass: a gets backend 2, backend 1 is removed, then b takes id 1 for its own.
	r.setVIP(lb.VIP{Key: a.Key, Backends: []lb.Backend{{ID: 2, Addr: mustAddr("198.51.100.12"), Weight: 1}}})
	if err := r.d.DeleteBackend(1); err != nil {
		t.Fatal(err)
	}
	r.setVIP(lb.VIP{Key: key("203.0.113.20", 80, tcp), Backends: []lb.Backend{{ID: 1, Addr: mustAddr("198.51.100.99"), Weight: 1}}})

	before, _ := r.d.Stats()
	v, out := r.run(ack.build(t))
	if v != xdpTx {
		t.Fatalf("ack: verdict %d", v)
	}
	if got := outerDst4(t, out); got != mustAddr("198.51.100.12") {
		t.Errorf("VIP a's flow went to %v, want a's backend 198.51.100.12 (198.51.100.99 is VIP b's)", got)
	}
	after, _ := r.d.Stats()
	if after["ct_not_member"]-before["ct_not_member"] != 1 {
		t.Errorf("ct_not_member %d -> %d, want one more", before["ct_not_member"], after["ct_not_member"])
	}
	if id, ok, _ := r.d.ConntrackLookup(syn.flow()); !ok || id != 2 {
		t.Errorf("conntrack after the ack: id %d ok %v, want the entry rewritten to 2", id, ok)
	}
}

// Removing a backend from one VIP while another VIP keeps the address: the first VIP's
// flows leave it once the grace period has passed (here 300 ms), the other's stay; within
// it they still go there, so a connection whose first packet went there just before the
// ring changed completes.
func TestPrivilegedConntrackLeavesBackendItsVIPDropped(t *testing.T) {
	const grace = 300 * time.Millisecond
	r := newRig(t, Options{MemberGrace: grace})
	shared := lb.Backend{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}
	other := lb.Backend{ID: 2, Addr: mustAddr("198.51.100.12"), Weight: 1}
	a := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: []lb.Backend{shared}}
	b := lb.VIP{Key: key("203.0.113.20", 80, tcp), Backends: []lb.Backend{shared}}
	r.setVIP(a)
	r.setVIP(b)
	synA := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"}
	synB := with(synA, func(p *pkt) { p.dst = "203.0.113.20" })
	r.run(synA.build(t))
	r.run(synB.build(t))
	r.setVIP(lb.VIP{Key: a.Key, Backends: []lb.Backend{other}})
	changed := time.Now()
	ackA := with(synA, func(p *pkt) { p.flags = "A" })
	if _, out := r.run(ackA.build(t)); time.Since(changed) < grace && outerDst4(t, out) != shared.Addr {
		t.Errorf("within the grace period: %s went to %v, want %v still", synA.dst, outerDst4(t, out), shared.Addr)
	}
	time.Sleep(grace + 200*time.Millisecond)
	for _, c := range []struct {
		p    pkt
		want string
	}{{synA, "198.51.100.12"}, {synB, "198.51.100.11"}} {
		ack := with(c.p, func(p *pkt) { p.flags = "A" })
		if _, out := r.run(ack.build(t)); outerDst4(t, out) != mustAddr(c.want) {
			t.Errorf("%s: went to %v, want %s", c.p.dst, outerDst4(t, out), c.want)
		}
	}
}

// Each backend is counted under each VIP it serves, not node-wide under every VIP.
func TestPrivilegedCountersPerVIPAndBackend(t *testing.T) {
	r := newRig(t, Options{})
	shared := lb.Backend{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}
	a := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: []lb.Backend{shared}}
	b := lb.VIP{Key: key("203.0.113.20", 80, tcp), Backends: []lb.Backend{shared}}
	r.setVIP(a)
	r.setVIP(b)
	p := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "A", payload: 60}
	for i := range 3 {
		r.run(with(p, func(p *pkt) { p.sport = uint16(41000 + i) }).build(t))
	}
	r.run(with(p, func(p *pkt) { p.dst = "203.0.113.20" }).build(t))
	n := NewNode(r.d, "test")
	c, err := n.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := c.VIPBackends[a.Key][1].Packets; got != 3 {
		t.Errorf("backend 1 under %v: %d packets, want 3", a.Key, got)
	}
	if got := c.VIPBackends[b.Key][1].Packets; got != 1 {
		t.Errorf("backend 1 under %v: %d packets, want 1", b.Key, got)
	}
	if got := c.Backends[1].Packets; got != 4 {
		t.Errorf("backend 1 node-wide: %d packets, want 4", got)
	}
	// The id given out again (after its address left every VIP) counts from zero.
	r.setVIP(lb.VIP{Key: a.Key, Backends: []lb.Backend{{ID: 2, Addr: mustAddr("198.51.100.12"), Weight: 1}}})
	r.setVIP(lb.VIP{Key: b.Key, Backends: []lb.Backend{{ID: 2, Addr: mustAddr("198.51.100.12"), Weight: 1}}})
	if err := r.d.DeleteBackend(1); err != nil {
		t.Fatal(err)
	}
	r.setVIP(lb.VIP{Key: a.Key, Backends: []lb.Backend{{ID: 1, Addr: mustAddr("198.51.100.77"), Weight: 1}}})
	if c, _, _ := r.d.PairCounters(r.vipID(a.Key), 1); c.Packets != 0 {
		t.Errorf("reused backend id 1 starts with %d packets, want 0", c.Packets)
	}
}

func (r *rig) vipID(k lb.VIPKey) uint32 {
	r.tb.Helper()
	ids, err := r.d.VIPs()
	if err != nil {
		r.tb.Fatal(err)
	}
	id, ok := ids[k]
	if !ok {
		r.tb.Fatalf("no vip %v", k)
	}
	return id
}

// Reading counters leaves the cache SetVIP relies on alone: a read that raced a pass
// could otherwise put back a backend the pass had just deleted, and the next SetVIP would
// skip writing it.
func TestPrivilegedCountersReadLeavesBackendCache(t *testing.T) {
	r := newRig(t, Options{})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: []lb.Backend{{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}}})
	// What a reader's snapshot would hold: a backend the cache does not (deleted since).
	a16, fam := bpfobj.Addr16(mustAddr("198.51.100.50"))
	if err := r.d.objs.Backends.Put(uint32(7), &xdplbBackend{Addr: a16, Family: fam, Flags: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewNode(r.d, "test").Counters(); err != nil {
		t.Fatal(err)
	}
	if r.d.vc.hasBackend(7, mustAddr("198.51.100.50")) {
		t.Error("reading counters rewrote the backend cache")
	}
}

// The lock-free conntrack is proven under x86-64 ordering only: elsewhere Load refuses,
// saying what to run instead.
func TestLoadRefusesUnprovenArchitecture(t *testing.T) {
	defer func(a string) { hostArch = a }(hostArch)
	hostArch = "arm64"
	_, err := Load(Options{})
	if !errors.Is(err, ErrArch) {
		t.Fatalf("Load on arm64: %v, want ErrArch", err)
	}
	for _, want := range []string{"arm64", "memory ordering", "nftables"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// onCPU0 runs the calling goroutine's thread on CPU 0 until the test ends, so per-CPU
// state seen by successive test runs is one CPU's.
func onCPU0(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	var set, old unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.SchedSetaffinity(0, &old) })
}

// ICMP too-big replies the program generates are limited per source prefix: a sender
// past the rate gets drops (counted), another prefix still gets its replies.
func TestPrivilegedTooBigRateLimited(t *testing.T) {
	onCPU0(t)
	r := newRig(t, Options{MTU: 1400, TooBigRate: 3})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: []lb.Backend{{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}}})
	big := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "A", payload: 1390, df: true}
	sent := 0
	for i := range 5 {
		if v, _ := r.run(with(big, func(p *pkt) { p.sport = uint16(40000 + i) }).build(t)); v == xdpTx {
			sent++
		}
	}
	if sent != 3 {
		t.Errorf("%d too-big replies to one /24 in a second, want 3", sent)
	}
	st, _ := r.d.Stats()
	if st["drop_too_big_rate"] != 2 || st["tx_icmp_too_big"] != 3 {
		t.Errorf("drop_too_big_rate %d tx_icmp_too_big %d, want 2 and 3", st["drop_too_big_rate"], st["tx_icmp_too_big"])
	}
	if v, _ := r.run(with(big, func(p *pkt) { p.src = "192.0.2.77" }).build(t)); v != xdpTx {
		t.Errorf("another prefix got verdict %d, want its reply", v)
	}
}

// xdpMD is struct xdp_md, the context of a test run.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Each interface gets the next hop of its own routes: a packet arriving on (and so
// leaving by) an interface with an entry carries that MAC; others the node's.
func TestPrivilegedNextHopPerInterface(t *testing.T) {
	r := newRig(t, Options{})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: []lb.Backend{{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}}})
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	mac := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 0x07}
	if err := r.d.SetNextHops(map[int]net.HardwareAddr{lo.Index: mac}); err != nil {
		t.Fatal(err)
	}
	in := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"}.build(t)
	run := func(ifindex int) net.HardwareAddr {
		out := make([]byte, len(in)+256)
		ctx := xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(ifindex)}
		opts := ebpf.RunOptions{Data: in, DataOut: out, Context: ctx, ContextOut: &xdpMD{}}
		if _, err := r.d.Program().Run(&opts); err != nil {
			t.Fatal(err)
		}
		return net.HardwareAddr(opts.DataOut[:6])
	}
	if got := run(lo.Index); !bytes.Equal(got, mac) {
		t.Errorf("packet via lo: next hop %v, want %v", got, mac)
	}
	// A test run's packet arrives on lo: an entry for another interface leaves it alone.
	if err := r.d.SetNextHops(map[int]net.HardwareAddr{lo.Index + 1000: mac}); err != nil {
		t.Fatal(err)
	}
	if got := run(lo.Index); !bytes.Equal(got, macNextHop) {
		t.Errorf("packet via an interface without an entry: next hop %v, want the node's %v", got, macNextHop)
	}
	if err := r.d.SetNextHops(nil); err != nil {
		t.Fatal(err)
	}
	if got := run(lo.Index); !bytes.Equal(got, macNextHop) {
		t.Errorf("after clearing: next hop %v, want the node's %v", got, macNextHop)
	}
}

// A deleted VIP's id is not the next one handed out: a packet that read the old VIP's
// entry just before it went must not read another VIP's ring and counters under it.
func TestPrivilegedVIPIDNotReusedAtOnce(t *testing.T) {
	r := newRig(t, Options{})
	a := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: []lb.Backend{{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}}}
	b := lb.VIP{Key: key("203.0.113.20", 80, tcp), Backends: []lb.Backend{{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}}}
	idA, err := r.d.SetVIP(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.d.DeleteVIP(a.Key); err != nil {
		t.Fatal(err)
	}
	idB, err := r.d.SetVIP(b)
	if err != nil {
		t.Fatal(err)
	}
	if idA == idB {
		t.Errorf("vip id %d given to %v right after %v was deleted", idB, b.Key, a.Key)
	}
}

// A backend taken out of its only VIP in a pass (the controller deletes it at the end)
// keeps forwarding the flows conntrack has for it for the grace period, so a connection
// whose SYN reached it just before the ring changed completes; then they are re-hashed.
func TestPrivilegedNodeDeletesBackendAfterGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	r := newRig(t, Options{MemberGrace: grace})
	n := NewNode(r.d, "test")
	be1 := lb.Backend{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}
	be2 := lb.Backend{ID: 2, Addr: mustAddr("198.51.100.12"), Weight: 1}
	be3 := lb.Backend{ID: 3, Addr: mustAddr("198.51.100.13"), Weight: 1}
	k := key("203.0.113.10", 80, tcp)
	if err := n.SetVIP(lb.VIP{Key: k, Backends: []lb.Backend{be1, be2}}); err != nil {
		t.Fatal(err)
	}
	// A flow on be2.
	var syn pkt
	for sport := uint16(40000); ; sport++ {
		syn = pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: sport, dport: 80, flags: "S"}
		if _, out := r.run(syn.build(t)); outerDst4(t, out) == be2.Addr {
			break
		}
		if sport > 40100 {
			t.Fatal("no flow hashed to be2")
		}
	}
	ack := with(syn, func(p *pkt) { p.flags = "A" })
	// The pass: be2 replaced by be3, then deleted.
	if err := n.SetVIP(lb.VIP{Key: k, Backends: []lb.Backend{be1, be3}}); err != nil {
		t.Fatal(err)
	}
	if err := n.DeleteBackend(be2.ID); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	if _, out := r.run(ack.build(t)); time.Since(changed) < grace && outerDst4(t, out) != be2.Addr {
		t.Errorf("within the grace period the flow went to %v, want be2 %v still", outerDst4(t, out), be2.Addr)
	}
	if bs, _ := r.d.Backends(); bs[be2.ID] != be2.Addr {
		t.Errorf("within the grace period the backends map has %v, want be2 still", bs)
	}
	time.Sleep(grace + 300*time.Millisecond)
	if bs, _ := r.d.Backends(); bs[be2.ID].IsValid() {
		t.Errorf("after the grace period be2 is still in the backends map: %v", bs)
	}
	if _, out := r.run(ack.build(t)); outerDst4(t, out) == be2.Addr {
		t.Errorf("after the grace period the flow still went to be2")
	}
	// A backend listed again before its grace ends is kept.
	if err := n.DeleteBackend(be3.ID); err != nil {
		t.Fatal(err)
	}
	if err := n.SetVIP(lb.VIP{Key: k, Backends: []lb.Backend{be1, be3}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(grace + 300*time.Millisecond)
	if bs, _ := r.d.Backends(); bs[be3.ID] != be3.Addr {
		t.Errorf("be3, listed again within its grace, was deleted: %v", bs)
	}
}
