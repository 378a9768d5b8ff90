package lb

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// randomBackends makes n backends with ids 1..n (shuffled) over addresses and weights
// drawn to hit the population's edge cases: IPv4, IPv6, IPv4-mapped IPv6 (the same hash
// as the plain IPv4), the same address twice, zones, the invalid address, equal,
// weighted, drained and huge weights.
func randomBackends(rng *rand.Rand, n int) []Backend {
	ids := rng.Perm(n)
	weights := []func() uint32{
		func() uint32 { return 1 },
		func() uint32 { return uint32(rng.IntN(4)) * 3 },
		func() uint32 { return 1 + uint32(rng.IntN(1<<16)) },
		func() uint32 { return rng.Uint32() },
		func() uint32 { return max(1, rng.Uint32()>>uint(rng.IntN(32))) },
	}
	weight := weights[rng.IntN(len(weights))]
	if rng.IntN(4) == 0 {
		eq := 1 + uint32(rng.IntN(1000))
		weight = func() uint32 { return eq }
	}
	out := make([]Backend, n)
	for i := range out {
		var a netip.Addr
		switch k := rng.IntN(20); {
		case k < 8:
			a = netip.AddrFrom4([4]byte{198, 51, byte(100 + rng.IntN(2)), byte(rng.IntN(256))})
		case k < 16:
			var b [16]byte
			copy(b[:], []byte{0x20, 0x01, 0x0d, 0xb8})
			for j := 4; j < 16; j++ {
				if rng.IntN(3) == 0 {
					b[j] = byte(rng.IntN(256))
				}
			}
			a = netip.AddrFrom16(b)
		case k < 18:
			a = netip.AddrFrom16(netip.AddrFrom4([4]byte{198, 51, 100, byte(rng.IntN(256))}).As16())
		case k < 19:
			a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(rng.IntN(4))}).WithZone([]string{"eth0", "eth1", "lo"}[rng.IntN(3)])
		default:
			if i > 0 && rng.IntN(2) == 0 {
				a = out[rng.IntN(i)].Addr
			} // else the invalid address
		}
		out[i] = Backend{ID: uint32(ids[i] + 1), Addr: a, Weight: weight()}
	}
	return out
}

func randomPrime(rng *rand.Rand, lo, hi uint32) uint32 {
	for {
		p := lo + uint32(rng.IntN(int(hi-lo)))
		for ; p <= hi; p++ {
			if isPrime(p) {
				return p
			}
		}
	}
}

// TestMaglevSameAsBefore compares MaglevTable with maglevPrev, the implementation before
// the population was optimised, on random inputs: every table must be bit-identical, and
// bad input must give the same error.
func TestMaglevSameAsBefore(t *testing.T) {
	t.Run("default", testMaglevSameAsBefore)
	// every size through the fast population, which only large tables take otherwise
	t.Run("fast-path", func(t *testing.T) {
		defer func(s uint32) { maglevSmall = s }(maglevSmall)
		maglevSmall = 0
		testMaglevSameAsBefore(t)
	})
}

func testMaglevSameAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 65537))
	sizes := []uint32{3, 5, 7, 11, 13, 101, 257, 1009, 4099, 65537}
	counts := []int{0, 1, 2, 3, 5, 10, 37, 100, 333, 1000, 2500}
	cases := 400
	if testing.Short() {
		cases = 100
	}
	check := func(name string, bs []Backend, size uint32) {
		t.Helper()
		want, werr := maglevPrev(slices.Clone(bs), size)
		got, gerr := MaglevTable(slices.Clone(bs), size)
		if fmt.Sprint(werr) != fmt.Sprint(gerr) {
			t.Fatalf("%s: error %v, before %v", name, gerr, werr)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d slots, before %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: slot %d is backend %d, before %d (backends %v)", name, i, got[i], want[i], bs)
			}
		}
	}
	for c := range cases {
		size := sizes[rng.IntN(len(sizes))]
		if rng.IntN(4) == 0 {
			size = randomPrime(rng, 257, 1<<17)
		}
		n := counts[rng.IntN(len(counts))]
		if rng.IntN(4) == 0 {
			n = rng.IntN(200)
		}
		bs := randomBackends(rng, n)
		check(fmt.Sprintf("case %d: %d backends, %d slots", c, n, size), bs, size)
		if n > 1 && c%8 == 0 {
			// bad input: id 0, an id twice, a size that is not prime
			bad := slices.Clone(bs)
			switch rng.IntN(3) {
			case 0:
				bad[rng.IntN(n)].ID = 0
			case 1:
				bad[rng.IntN(n)].ID = bad[rng.IntN(n)].ID
				bad[rng.IntN(n)].ID = bad[rng.IntN(n)].ID
			default:
				size++
			}
			check(fmt.Sprintf("case %d (bad): %d backends, %d slots", c, n, size), bad, size)
		}
	}
	// the largest rings, a few times
	for c := range 4 {
		size := []uint32{1048573, randomPrime(rng, 1<<19, 1048573)}[c%2]
		n := []int{1, 10, 1000, 3}[c]
		check(fmt.Sprintf("large %d: %d backends, %d slots", c, n, size), randomBackends(rng, n), size)
	}
	// many backends on a small ring: most never get a slot
	check("5000 backends, 257 slots", nBackends(5000, one), 257)
	check("5000 weighted backends, 4099 slots", nBackends(5000, func(i int) uint32 { return uint32(1 + i%7) }), 4099)
}
