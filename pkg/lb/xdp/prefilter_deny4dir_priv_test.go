package xdp

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

// TestPrivilegedDeny4DirAgreesWithReference: with a random, heavily overlapping IPv4 deny list
// (added in bulk and one by one, partly deleted), the program denies exactly the random
// sources a Go longest-prefix match denies, and each drop counts on the prefix that
// reference names; again after the flattened list is rebuilt from the trie (as after an
// upgrade from a release without it). Addresses are map keys and test-run packets only.
func TestPrivilegedDeny4DirAgreesWithReference(t *testing.T) {
	r := newRig(t, Options{})
	web := key("203.0.113.10", 80, tcp)
	r.setVIP(lb.VIP{Key: web, Backends: backends(1, "198.51.100.11", "198.51.100.12")})
	rng := rand.New(rand.NewPCG(3, 4))

	toPrefixes := func(ks []xdplbDeny4Key) []netip.Prefix {
		out := make([]netip.Prefix, len(ks))
		for i, k := range ks {
			out[i] = netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen))
		}
		return out
	}
	listed := map[netip.Prefix]bool{}
	bulk := toPrefixes(randomPrefixes4(rng, 6000)) // > 4096: the batch path
	small := toPrefixes(randomPrefixes4(rng, 500)) // one by one
	small = append(small, netip.MustParsePrefix("198.0.0.0/9"), netip.MustParsePrefix("203.0.113.0/24"))
	for _, ps := range [][]netip.Prefix{bulk, small} {
		if err := r.d.DenyAdd(ps); err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			listed[p] = true
		}
	}
	var gone []netip.Prefix
	for p := range listed {
		if rng.IntN(3) == 0 {
			gone = append(gone, p)
		}
	}
	gone = append(gone, netip.MustParsePrefix("198.0.0.0/9"))
	if err := r.d.DenyDelete(gone); err != nil {
		t.Fatal(err)
	}
	for _, p := range gone {
		delete(listed, p)
	}

	longest := func(a netip.Addr) (netip.Prefix, bool) {
		for bits := 32; bits >= 0; bits-- {
			p, _ := a.Prefix(bits)
			if listed[p] {
				return p, true
			}
		}
		return netip.Prefix{}, false
	}
	want := map[netip.Prefix]uint64{}
	var wantFast uint64 // drops the array decides (counted in deny4_counts): all of them
	send := func(n int) {
		t.Helper()
		denied := 0
		for i := 0; i < n; i++ {
			// Mostly inside the prefixes' regions, some anywhere.
			v := rng.Uint32()
			if rng.IntN(5) != 0 {
				v = []uint32{0x0a000000, 0x0a010000, 0xc6336400, 0xcb007100}[rng.IntN(4)] | v&0x00ffffff
			}
			a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
			p, deny := longest(a)
			ret, _ := r.run(pkt{src: a.String(), dst: "203.0.113.10", proto: tcp, sport: uint16(1024 + i), dport: 80, flags: "S"}.build(t))
			switch {
			case deny && ret != xdpDrop:
				t.Errorf("source %s (in %s): verdict %d, want drop", a, p, ret)
			case !deny && ret == xdpDrop:
				t.Errorf("source %s (not listed): dropped", a)
			}
			if deny {
				want[p]++
				denied++
				wantFast++
			}
		}
		t.Logf("%d sources, %d denied", n, denied)
		var fast uint64
		if err := batchRead(r.d.objs.Deny4Counts, func(_ xdplbDeny4Key, drops uint64) { fast += drops }); err != nil {
			t.Fatal(err)
		}
		if fast != wantFast {
			t.Errorf("deny4_counts counted %d drops, want %d (the array decides every one, not the trie)", fast, wantFast)
		}
		list, err := r.d.DenyList()
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != len(listed) {
			t.Errorf("deny list holds %d prefixes, want %d", len(list), len(listed))
		}
		for _, e := range list {
			if !listed[e.Prefix] {
				t.Errorf("%s listed after its delete", e.Prefix)
			}
			if e.Drops != want[e.Prefix] {
				t.Errorf("%s: %d drops, want %d", e.Prefix, e.Drops, want[e.Prefix])
			}
		}
	}
	send(shortN(4000, 800))

	// Rebuild: an empty array and a prefilter_on without PREFILTER_F_DENY4_DIR, as a release
	// without the array leaves them; the counters of listed prefixes are kept.
	mem, err := r.d.objs.Deny4Dir.Memory()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mem.WriteAt(make([]byte, mem.Size()), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.d.objs.PrefilterOn.Put(uint32(0), uint32(1)); err != nil {
		t.Fatal(err)
	}
	r.d.deny4DirReady = false
	if err := r.d.syncDeny4Dir(); err != nil {
		t.Fatal(err)
	}
	if err := r.d.refreshPrefilterOn(); err != nil {
		t.Fatal(err)
	}
	send(shortN(2000, 400))
}

// TestPrivilegedDeny4DirSurvivesReload: a second daemon adopts the pinned array as built (it
// counts the longer prefixes from the trie again), so a later delete clears a length's
// bit only with the last prefix of that length; counters carry over.
func TestPrivilegedDeny4DirSurvivesReload(t *testing.T) {
	testutil.RequirePrivileged(t)
	opts := Options{PinPath: bpffsDir(t)}
	web := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12")}
	load := func() *Dataplane {
		t.Helper()
		d, err := Load(opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.SetConfig(testConfig); err != nil {
			t.Fatal(err)
		}
		if _, err := d.SetVIP(web); err != nil {
			t.Fatal(err)
		}
		return d
	}
	verdict := func(d *Dataplane, src string) uint32 {
		t.Helper()
		ret, _ := runProg(t, d.Program(), pkt{src: src, dst: "203.0.113.10", proto: tcp, sport: 1, dport: 80, flags: "S"}.build(t))
		return ret
	}
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	d1 := load()
	if err := d1.DenyAdd(pp("192.0.2.7/32", "192.0.2.9/32", "198.51.0.0/16")); err != nil {
		t.Fatal(err)
	}
	if v := verdict(d1, "192.0.2.7"); v != xdpDrop {
		t.Fatalf("first daemon: 192.0.2.7: verdict %d, want drop", v)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	d2 := load()
	defer func() {
		d2.Close()
		if err := d2.Unpin(); err != nil {
			t.Error(err)
		}
	}()
	if err := d2.DenyDelete(pp("192.0.2.7/32")); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]uint32{"192.0.2.7": xdpTx, "192.0.2.9": xdpDrop, "198.51.7.7": xdpDrop} {
		if v := verdict(d2, src); v != want {
			t.Errorf("second daemon, 192.0.2.7/32 deleted: %s: verdict %d, want %d", src, v, want)
		}
	}
	list, err := d2.DenyList()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, e := range list {
		got[e.Prefix.String()] = e.Drops
	}
	if diff := cmp.Diff(map[string]uint64{"192.0.2.9/32": 1, "198.51.0.0/16": 1}, got); diff != "" {
		t.Errorf("deny list (-want +got):\n%s", diff)
	}
}

// shortN is n, or small under -short (the stock kernels' VM runs the suite under TCG,
// about ten times slower: the smaller count covers the same code paths).
func shortN(n, small int) int {
	if testing.Short() {
		return small
	}
	return n
}
