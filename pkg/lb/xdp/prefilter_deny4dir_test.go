package xdp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// sliceDeny4Dir is a deny4_dir in memory, for the expansion's unit tests.
type sliceDeny4Dir []uint16

func (s sliceDeny4Dir) load(i uint32) uint16     { return s[i] }
func (s sliceDeny4Dir) store(i uint32, v uint16) { s[i] = v }

// deny4DirModel applies adds and deletes as the Dataplane does: an add of a listed prefix and
// a delete of an unlisted one change nothing.
type deny4DirModel struct {
	t      sliceDeny4Dir
	listed map[xdplbDeny4Key]bool
	long   map[uint32]uint32
}

func newDeny4DirModel() *deny4DirModel {
	return &deny4DirModel{t: make(sliceDeny4Dir, deny4DirSize), listed: map[xdplbDeny4Key]bool{}, long: map[uint32]uint32{}}
}

func pfxKey(s string) xdplbDeny4Key {
	p := netip.MustParsePrefix(s).Masked()
	return xdplbDeny4Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}
}

func (m *deny4DirModel) add(k xdplbDeny4Key) {
	if m.listed[k] {
		return
	}
	m.listed[k] = true
	deny4DirAdd(m.t, k, m.long)
}

func (m *deny4DirModel) del(k xdplbDeny4Key) {
	if !m.listed[k] {
		return
	}
	delete(m.listed, k)
	deny4DirDelete(m.t, k, func(a xdplbDeny4Key) bool { return m.listed[a] }, m.long)
}

// wantDeny4Dir is the entry of /24 i computed from the set alone: the longest listed prefix
// of length <= 24 containing it, and the lengths of the listed longer prefixes inside it.
func wantDeny4Dir(listed map[xdplbDeny4Key]bool, i uint32) uint16 {
	var own, long uint16
	a := netip.AddrFrom4([4]byte{byte(i >> 16), byte(i >> 8), byte(i), 0})
	for k := range listed {
		p := netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen))
		switch {
		case k.Prefixlen <= 24 && p.Contains(a) && uint16(k.Prefixlen)+1 > own:
			own = uint16(k.Prefixlen) + 1
		case k.Prefixlen > 24 && key4Addr(k)>>8 == i:
			long |= 1 << (k.Prefixlen - 25)
		}
	}
	return long<<deny4DirLongShift | own
}

// checkDeny4Dir compares the whole table with wantDeny4Dir: every /24 a listed prefix touches
// (and its neighbours) exactly, and every other /24 is empty.
func checkDeny4Dir(t *testing.T, m *deny4DirModel) {
	t.Helper()
	touched := map[uint32]bool{}
	full := false
	for k := range m.listed {
		if k.Prefixlen < 8 {
			full = true // too many /24s to list: the scan below compares them all
		}
		lo, n := key4Addr(k)>>8, uint32(1)
		if k.Prefixlen <= 24 {
			_, n = deny4DirRange(k)
		}
		if n > 1<<12 {
			// Spot-check a large range: its ends and a sample.
			for _, i := range []uint32{lo, lo + 1, lo + n/2, lo + n - 1} {
				touched[i] = true
			}
			continue
		}
		for i := lo; i < lo+n; i++ {
			touched[i] = true
		}
		touched[lo-1], touched[lo+n] = true, true
	}
	bad := 0
	for i := range touched {
		i &= deny4DirSize - 1
		if got, want := m.t[i], wantDeny4Dir(m.listed, i); got != want {
			if bad++; bad < 10 {
				t.Errorf("/24 %#06x: entry %#x, want %#x", i, got, want)
			}
		}
	}
	if full {
		return
	}
	for i, v := range m.t {
		if v != 0 && !touched[uint32(i)] {
			if want := wantDeny4Dir(m.listed, uint32(i)); v != want {
				if bad++; bad < 10 {
					t.Errorf("/24 %#06x (untouched): entry %#x, want %#x", i, v, want)
				}
			}
		}
	}
}

func TestDeny4DirExpansion(t *testing.T) {
	type op struct {
		del bool
		p   string
	}
	add := func(ps ...string) []op {
		var out []op
		for _, p := range ps {
			out = append(out, op{p: p})
		}
		return out
	}
	del := func(ps ...string) []op {
		var out []op
		for _, p := range ps {
			out = append(out, op{del: true, p: p})
		}
		return out
	}
	cat := func(ops ...[]op) []op {
		var out []op
		for _, o := range ops {
			out = append(out, o...)
		}
		return out
	}
	cases := []struct {
		name string
		ops  []op
		// probes: /24 (as an address inside it) -> want entry
		probes map[string]uint16
	}{
		{"single /24", add("198.51.100.0/24"), map[string]uint16{"198.51.100.7": 25, "198.51.101.0": 0, "198.51.99.255": 0}},
		{"/20 inside /16: the /20 wins inside it", add("198.51.0.0/16", "198.51.96.0/20"),
			map[string]uint16{"198.51.0.1": 17, "198.51.100.1": 21, "198.51.111.255": 21, "198.51.112.0": 17, "198.52.0.0": 0}},
		{"same, other order", add("198.51.96.0/20", "198.51.0.0/16"),
			map[string]uint16{"198.51.0.1": 17, "198.51.100.1": 21, "198.51.111.255": 21, "198.51.112.0": 17}},
		{"deleting the /16 restores the /20 alone", cat(add("198.51.0.0/16", "198.51.96.0/20"), del("198.51.0.0/16")),
			map[string]uint16{"198.51.0.1": 0, "198.51.100.1": 21, "198.51.112.0": 0}},
		{"deleting the /20 gives its /24s back to the /16", cat(add("198.51.0.0/16", "198.51.96.0/20"), del("198.51.96.0/20")),
			map[string]uint16{"198.51.100.1": 17, "198.51.0.1": 17}},
		{"three levels, middle deleted", cat(add("198.0.0.0/8", "198.51.0.0/16", "198.51.100.0/24"), del("198.51.0.0/16")),
			map[string]uint16{"198.51.100.3": 25, "198.51.101.0": 9, "198.200.0.0": 9}},
		{"longer prefixes count in their /24", add("192.0.2.0/25", "192.0.2.128/25", "192.0.2.7/32", "192.0.2.0/24"),
			map[string]uint16{"192.0.2.1": (1|1<<7)<<deny4DirLongShift | 25, "192.0.3.0": 0}},
		{"two /32s in a /24, one deleted: the /32 bit stays", cat(add("192.0.2.7/32", "192.0.2.9/32"), del("192.0.2.7/32")),
			map[string]uint16{"192.0.2.1": 1 << (deny4DirLongShift + 7)}},
		{"long prefixes deleted: their bits clear", cat(add("192.0.2.0/25", "192.0.2.7/32", "192.0.2.8/29"), del("192.0.2.7/32", "192.0.2.0/25")),
			map[string]uint16{"192.0.2.1": 1 << (deny4DirLongShift + 4)}},
		{"deleting what is not listed changes nothing", cat(add("192.0.2.0/24"), del("192.0.2.0/23", "192.0.2.1/32", "192.0.0.0/16")),
			map[string]uint16{"192.0.2.1": 25}},
		{"adding twice counts once", cat(add("192.0.2.1/32", "192.0.2.1/32"), del("192.0.2.1/32")),
			map[string]uint16{"192.0.2.1": 0}},
		{"/0 covers everything", add("0.0.0.0/0"), map[string]uint16{"0.0.0.0": 1, "255.255.255.255": 1, "128.0.0.0": 1}},
		{"/0 under a /1, the /1 deleted", cat(add("128.0.0.0/1", "0.0.0.0/0"), del("128.0.0.0/1")),
			map[string]uint16{"0.0.0.0": 1, "200.0.0.0": 1}},
		{"/0 deleted under a /1", cat(add("0.0.0.0/0", "128.0.0.0/1"), del("0.0.0.0/0")),
			map[string]uint16{"0.0.0.0": 0, "127.255.255.255": 0, "128.0.0.0": 2, "255.255.255.255": 2}},
		{"/32 edges", add("0.0.0.0/32", "255.255.255.255/32"),
			map[string]uint16{"0.0.0.0": 1 << (deny4DirLongShift + 7), "255.255.255.0": 1 << (deny4DirLongShift + 7), "0.0.1.0": 0}},
		{"/23 and its two /24s", cat(add("198.51.100.0/23", "198.51.101.0/24"), del("198.51.100.0/23")),
			map[string]uint16{"198.51.100.0": 0, "198.51.101.9": 25}},
		{"full /24 of /32s", add(func() []string {
			var ps []string
			for i := 0; i < 256; i++ {
				ps = append(ps, fmt.Sprintf("203.0.113.%d/32", i))
			}
			return append(ps, "203.0.113.0/25", "203.0.113.128/25", "203.0.113.0/26")
		}()...), map[string]uint16{"203.0.113.0": (1 | 1<<1 | 1<<7) << deny4DirLongShift}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newDeny4DirModel()
			for _, o := range c.ops {
				if o.del {
					m.del(pfxKey(o.p))
				} else {
					m.add(pfxKey(o.p))
				}
			}
			for a, want := range c.probes {
				i := key4Addr(pfxKey(a+"/32")) >> 8
				if got := m.t[i]; got != want {
					t.Errorf("%s: entry %#x, want %#x", a, got, want)
				}
			}
			checkDeny4Dir(t, m)
		})
	}
}

// randomPrefixes4 draws n IPv4 prefixes (lengths 8 to 32, a few shorter) inside a few
// small regions, so that they overlap often. Map keys only: no traffic is sent.
func randomPrefixes4(rng *rand.Rand, n int) []xdplbDeny4Key {
	bases := []uint32{0x0a000000, 0x0a010000, 0xc6336400, 0xcb007100}
	var out []xdplbDeny4Key
	for len(out) < n {
		a := bases[rng.IntN(len(bases))] | rng.Uint32()&0x00ffffff
		bits := 16 + rng.IntN(17)
		switch rng.IntN(400) {
		case 0:
			bits = 8 + rng.IntN(8)
		case 1, 2, 3, 4, 5, 6, 7, 8, 9, 10:
			bits = 24
		}
		out = append(out, key4(a, bits))
	}
	return out
}

// TestDeny4DirOrderIndependent: the table depends only on the final set of prefixes, not on
// the order of the adds and deletes that led to it.
func TestDeny4DirOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	for round := 0; round < 4; round++ {
		ps := randomPrefixes4(rng, 300)
		keep := map[xdplbDeny4Key]bool{}
		for _, k := range ps[:150] {
			keep[k] = true
		}
		m := newDeny4DirModel()
		// Add everything in a random order, then delete what is not kept in another.
		for _, i := range rng.Perm(len(ps)) {
			m.add(ps[i])
		}
		for _, i := range rng.Perm(len(ps)) {
			if !keep[ps[i]] {
				m.del(ps[i])
			}
		}
		checkDeny4Dir(t, m)
		// The kept set added alone, in a random order, gives the same table.
		fresh := newDeny4DirModel()
		for _, i := range rng.Perm(150) {
			fresh.add(ps[i])
		}
		for i := range m.t {
			if m.t[i] != fresh.t[i] {
				t.Fatalf("round %d: /24 %#06x: %#x after adds and deletes, %#x from the final set", round, i, m.t[i], fresh.t[i])
			}
		}
		// Deleting everything leaves an empty table.
		for _, i := range rng.Perm(len(ps)) {
			m.del(ps[i])
		}
		for i := range m.t {
			if m.t[i] != 0 {
				t.Fatalf("round %d: /24 %#06x: %#x after deleting everything", round, i, m.t[i])
			}
		}
	}
}
