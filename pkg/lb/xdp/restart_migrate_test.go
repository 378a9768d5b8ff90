package xdp

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

// A restart whose load migrates a state map (here: more VIPs than the rings array's
// headroom, so the rings array is replaced by a bigger one) must not let the program
// that is still attached read the first pass's writes against the maps it had: every
// packet during the pass goes to its VIP's backend by the old ring or the new, none is
// dropped or sent elsewhere.
func TestPrivilegedMigratingRestartServesNoStaleRings(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := bpffsDir(t)
	ns := testutil.NewNetNS(t, "lb")
	peer := testutil.NewNetNS(t, "peer")
	testutil.Veth(t, ns, "v0", peer, "v1")

	vip := func(i int) lb.VIP {
		v := lb.VIP{Key: key(fmt.Sprintf("203.0.113.%d", 1+i), 80, tcp)}
		for j := range 3 {
			v.Backends = append(v.Backends, lb.Backend{ID: uint32(1 + (i*3+j)%240), Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + (i*3+j)%240)}), Weight: 1})
		}
		return v
	}
	const before, after = 40, 80 // 64 VIPs at the default ring size fill the default rings array
	var vips []lb.VIP
	for i := range after {
		vips = append(vips, vip(i))
	}
	sizes := func(n int) []uint32 {
		out := make([]uint32, n)
		for i := range out {
			out[i] = lb.DefaultRingSize
		}
		return out
	}

	d1, err := Load(Options{PinPath: dir, RingSlots: RingSlotsFor(sizes(before))})
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.SetConfig(testConfig); err != nil {
		t.Fatal(err)
	}
	for _, v := range vips[:before] {
		if _, err := d1.SetVIP(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := ns.Do(func() error { _, err := d1.Attach("v0"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := link.LoadPinnedLink(filepath.Join(dir, "link_v0"), nil); err == nil {
			l.Unpin()
			l.Close()
		}
	})
	d1.Close() // the daemon stops; its link stays

	tables := map[lb.VIPKey][]uint32{}
	for _, v := range vips {
		tables[v.Key], _ = lb.MaglevTable(v.Backends, lb.DefaultRingSize)
	}
	attached := func() *ebpf.Program {
		t.Helper()
		l, err := link.LoadPinnedLink(filepath.Join(dir, "link_v0"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		p, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := 0
	check := func(programmed int, when string) {
		t.Helper()
		p := attached()
		defer p.Close()
		for i, v := range vips[:programmed] {
			f := pkt{src: cli4, dst: v.Key.Addr.String(), proto: tcp, sport: uint16(30000 + i), dport: 80, flags: "S"}
			ret, out := runProg(t, p, f.build(t))
			want := v.Backends[0].Addr // placeholder, replaced below
			slot := RingSlot(SlotModulo, FlowHash(f.flow(), v.Flags), lb.DefaultRingSize)
			id := tables[v.Key][slot]
			for _, b := range v.Backends {
				if b.ID == id {
					want = b.Addr
				}
			}
			if ret != xdpTx {
				bad++
				if bad <= 5 {
					t.Errorf("%s: %v dropped (verdict %d)", when, v.Key, ret)
				}
				continue
			}
			if got := outerDst4(t, out); got != want {
				bad++
				if bad <= 5 {
					t.Errorf("%s: %v went to %v, want %v", when, v.Key, got, want)
				}
			}
		}
	}
	check(before, "before the restart")

	d2, err := Load(Options{PinPath: dir, RingSlots: RingSlotsFor(sizes(after))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d2.Unpin()
		d2.Close()
	})
	if d2.objs.Rings.MaxEntries() <= uint32(RingSlotsFor(sizes(before))/RingBlockSlots) {
		t.Fatalf("rings not migrated to a bigger array (%d blocks): the test needs it", d2.objs.Rings.MaxEntries())
	}
	if err := d2.SetConfig(testConfig); err != nil {
		t.Fatal(err)
	}
	// The first pass, with packets between its writes.
	for i, v := range vips {
		if _, err := d2.SetVIP(v); err != nil {
			t.Fatal(err)
		}
		check(max(before, i+1), fmt.Sprintf("pass, after vip %d", i))
	}
	if err := ns.Do(func() error { _, err := d2.Attach("v0"); return err }); err != nil {
		t.Fatal(err)
	}
	check(after, "after attach")
	if bad > 0 {
		t.Errorf("%d packets dropped or misrouted", bad)
	}
}

// An upgrade from a release without vip_backends: until a pass has filled it for every
// VIP, conntrack entries are followed without the membership check, so a flow on a
// drained backend (a member that no ring slot names) keeps it, also when the first pass
// wrote only some VIPs (it failed part way); after, the check is on.
func TestPrivilegedMembershipFilledBeforeItIsChecked(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := bpffsDir(t)
	ns := testutil.NewNetNS(t, "lb")
	peer := testutil.NewNetNS(t, "peer")
	testutil.Veth(t, ns, "v0", peer, "v1")
	a := lb.Backend{ID: 1, Addr: mustAddr("198.51.100.11"), Weight: 1}
	b := lb.Backend{ID: 2, Addr: mustAddr("198.51.100.12"), Weight: 1}
	drained := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: []lb.Backend{{ID: 1, Addr: a.Addr, Weight: 0}, b}}
	syn := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"}
	ack := with(syn, func(p *pkt) { p.flags = "A" })

	d1, err := Load(Options{PinPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.SetConfig(testConfig); err != nil {
		t.Fatal(err)
	}
	if _, err := d1.SetVIP(lb.VIP{Key: drained.Key, Backends: []lb.Backend{a}}); err != nil {
		t.Fatal(err)
	}
	runProg(t, d1.Program(), syn.build(t))
	if _, err := d1.SetVIP(drained); err != nil {
		t.Fatal(err)
	}
	other := lb.VIP{Key: key("203.0.113.11", 80, tcp), Backends: []lb.Backend{b}}
	if _, err := d1.SetVIP(other); err != nil {
		t.Fatal(err)
	}
	d1.Close()
	// The previous release had no vip_backends (nor pair_stats).
	for _, pin := range []string{"vip_backends", "pair_stats"} {
		if err := os.Remove(filepath.Join(dir, pin)); err != nil {
			t.Fatal(err)
		}
	}

	d2, err := Load(Options{PinPath: dir, MemberGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := link.LoadPinnedLink(filepath.Join(dir, "link_v0"), nil); err == nil {
			l.Unpin()
			l.Close()
		}
		d2.Unpin()
		d2.Close()
	})
	if _, out := runProg(t, d2.Program(), ack.build(t)); outerDst4(t, out) != a.Addr {
		t.Errorf("before the first pass: the drained backend's flow went to %v, want %v", outerDst4(t, out), a.Addr)
	}
	if _, err := d2.SetVIP(drained); err != nil {
		t.Fatal(err)
	}
	if err := ns.Do(func() error { _, err := d2.Attach("v0"); return err }); err != nil {
		t.Fatal(err)
	}
	var ready uint32
	if err := d2.objs.MembersReady.Get(&ready); err != nil || ready != 0 {
		t.Fatalf("members_ready with one of two VIPs written = %d (%v), want 0", ready, err)
	}
	if _, out := runProg(t, d2.Program(), ack.build(t)); outerDst4(t, out) != a.Addr {
		t.Errorf("one of two VIPs written: the drained backend's flow went to %v, want %v", outerDst4(t, out), a.Addr)
	}
	if _, err := d2.SetVIP(other); err != nil {
		t.Fatal(err)
	}
	if err := d2.objs.MembersReady.Get(&ready); err != nil || ready != 1 {
		t.Fatalf("members_ready with every VIP written = %d (%v), want 1", ready, err)
	}
	if _, out := runProg(t, d2.Program(), ack.build(t)); outerDst4(t, out) != a.Addr {
		t.Errorf("every VIP written: the drained backend's flow went to %v, want %v", outerDst4(t, out), a.Addr)
	}
	// And now the check is on: without a as a member, the entry is not followed.
	if _, err := d2.SetVIP(lb.VIP{Key: drained.Key, Backends: []lb.Backend{b}}); err != nil {
		t.Fatal(err)
	}
	if _, out := runProg(t, d2.Program(), ack.build(t)); outerDst4(t, out) != b.Addr {
		t.Errorf("a removed: the flow went to %v, want %v", outerDst4(t, out), b.Addr)
	}
}
