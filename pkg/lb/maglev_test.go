package lb

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func nBackends(n int, weight func(i int) uint32) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = Backend{ID: uint32(i + 1), Addr: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0x0b, 12: byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}), Weight: weight(i)}
	}
	return out
}

func one(int) uint32 { return 1 }

func shares(table []uint32) map[uint32]int {
	out := map[uint32]int{}
	for _, id := range table {
		out[id]++
	}
	return out
}

func TestMaglevEqualWeightsBalanced(t *testing.T) {
	for _, n := range []int{1, 2, 3, 10, 100, 333, 650} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			bs := nBackends(n, one)
			table, err := MaglevTable(bs, DefaultRingSize)
			if err != nil {
				t.Fatal(err)
			}
			ideal := float64(DefaultRingSize) / float64(n)
			got := shares(table)
			worst := 0.0
			for _, b := range bs {
				dev := (float64(got[b.ID]) - ideal) / ideal
				worst = max(worst, dev, -dev)
			}
			t.Logf("%d backends: worst deviation from the ideal share %.3f%%", n, 100*worst)
			if worst > 0.01 {
				t.Errorf("worst share deviates %.3f%% from ideal, want <= 1%%", 100*worst)
			}
			if got[0] != 0 {
				t.Errorf("%d slots left empty", got[0])
			}
		})
	}
}

func TestMaglevWeightsProportional(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]uint32, 50)
	for i := range random {
		random[i] = 1 + uint32(rng.IntN(20))
	}
	for name, weights := range map[string][]uint32{
		"1-2-3-4":   {1, 2, 3, 4},
		"1-100":     {1, 100},
		"3-3-7":     {3, 3, 7},
		"random-50": random,
	} {
		t.Run(name, func(t *testing.T) {
			bs := nBackends(len(weights), func(i int) uint32 { return weights[i] })
			table, err := MaglevTable(bs, DefaultRingSize)
			if err != nil {
				t.Fatal(err)
			}
			var total uint64
			for _, w := range weights {
				total += uint64(w)
			}
			got := shares(table)
			for i, b := range bs {
				ideal := float64(DefaultRingSize) * float64(weights[i]) / float64(total)
				if dev := (float64(got[b.ID]) - ideal) / ideal; dev > 0.01 || dev < -0.01 {
					t.Errorf("backend %d weight %d: %d slots, ideal %.0f (%.2f%% off)", b.ID, weights[i], got[b.ID], ideal, 100*dev)
				}
			}
		})
	}
}

func TestMaglevOrderIndependentAndDeterministic(t *testing.T) {
	bs := nBackends(37, func(i int) uint32 { return uint32(1 + i%4) })
	want, err := MaglevTable(bs, DefaultRingSize)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 5 {
		shuffled := append([]Backend(nil), bs...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got, err := MaglevTable(shuffled, DefaultRingSize)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("shuffled input gives another table (-want +got):\n%s", diff)
		}
	}
}

// TestMaglevGolden pins the algorithm: every node must compute the same table from the
// same backends, including nodes running other versions of l4lb. If this checksum
// changes, flows move between backends during a rolling upgrade: change it only on
// purpose, and say so in the release notes.
func TestMaglevGolden(t *testing.T) {
	bs := []Backend{
		{ID: 1, Addr: netip.MustParseAddr("198.51.100.11"), Weight: 1},
		{ID: 2, Addr: netip.MustParseAddr("198.51.100.12"), Weight: 2},
		{ID: 3, Addr: netip.MustParseAddr("2001:db8:b::13"), Weight: 1},
	}
	table, err := MaglevTable(bs, DefaultRingSize)
	if err != nil {
		t.Fatal(err)
	}
	h := fnv.New64a()
	for _, id := range table {
		h.Write([]byte{byte(id), byte(id >> 8), byte(id >> 16), byte(id >> 24)})
	}
	const want = uint64(0xb9179867778666c7)
	if got := h.Sum64(); got != want {
		t.Errorf("table checksum %#x, want %#x", got, want)
	}
}

// disruption removes backend 0 of n and returns the fraction of slots that moved between
// two surviving backends (slots of the removed backend must move; others need not).
func disruption(t *testing.T, n int) float64 {
	t.Helper()
	bs := nBackends(n, one)
	before, err := MaglevTable(bs, DefaultRingSize)
	if err != nil {
		t.Fatal(err)
	}
	removed := bs[0].ID
	after, err := MaglevTable(bs[1:], DefaultRingSize)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i := range before {
		if before[i] != removed && before[i] != after[i] {
			moved++
		}
		if after[i] == removed {
			t.Fatalf("slot %d still names the removed backend", i)
		}
	}
	return float64(moved) / float64(len(before))
}

func TestMaglevDisruption(t *testing.T) {
	for _, tc := range []struct {
		n     int
		bound float64
	}{{100, 0.016}, {1000, 0.008}} {
		got := disruption(t, tc.n)
		t.Logf("remove 1 of %d: %.3f%% of slots moved between surviving backends", tc.n, 100*got)
		if got > tc.bound {
			t.Errorf("remove 1 of %d: %.3f%% of slots moved between survivors, want <= %.1f%%", tc.n, 100*got, 100*tc.bound)
		}
	}
}

func TestMaglevEdgeCases(t *testing.T) {
	drained := []Backend{{ID: 1, Addr: netip.MustParseAddr("198.51.100.1"), Weight: 0}, {ID: 2, Addr: netip.MustParseAddr("198.51.100.2"), Weight: 1}}
	table, err := MaglevTable(drained, 251)
	if err != nil {
		t.Fatal(err)
	}
	if s := shares(table); s[1] != 0 || s[2] != 251 {
		t.Errorf("drained backend shares %v, want all 251 slots on backend 2", s)
	}
	table, err = MaglevTable([]Backend{{ID: 1, Addr: netip.MustParseAddr("198.51.100.1")}}, 251)
	if err != nil {
		t.Fatal(err)
	}
	if s := shares(table); s[0] != 251 {
		t.Errorf("all-drained table %v, want all zero", s)
	}
	for _, size := range []uint32{0, 1, 4, 65536} {
		if _, err := MaglevTable(drained, size); err == nil {
			t.Errorf("size %d accepted", size)
		}
	}
	dup := []Backend{{ID: 1, Addr: netip.MustParseAddr("198.51.100.1"), Weight: 1}, {ID: 1, Addr: netip.MustParseAddr("198.51.100.2"), Weight: 1}}
	if _, err := MaglevTable(dup, 251); err == nil {
		t.Error("duplicate ids accepted")
	}
	if _, err := MaglevTable([]Backend{{ID: 0, Addr: netip.MustParseAddr("198.51.100.1"), Weight: 1}}, 251); err == nil {
		t.Error("id 0 accepted")
	}
}

func BenchmarkMaglev(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			bs := nBackends(n, one)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := MaglevTable(bs, DefaultRingSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
