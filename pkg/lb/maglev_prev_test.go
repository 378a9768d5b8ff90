package lb

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"testing"
)

// maglevPrev is MaglevTable as it was before its population was optimised (commit
// 34a2eae), kept verbatim as the reference that the optimised one must match bit for bit
// on every input: rings must not change across releases.
func maglevPrev(backends []Backend, size uint32) ([]uint32, error) {
	if !isPrime(size) {
		return nil, fmt.Errorf("maglev table size %d is not prime: %w", size, ErrRingSize)
	}
	live := make([]Backend, 0, len(backends))
	seen := make(map[uint32]bool, len(backends))
	var maxW uint64
	for _, b := range backends {
		if b.ID == 0 {
			return nil, fmt.Errorf("backend %s: id 0 is reserved: %w", b.Addr, ErrInvalid)
		}
		if seen[b.ID] {
			return nil, fmt.Errorf("backend id %d used twice: %w", b.ID, ErrInvalid)
		}
		seen[b.ID] = true
		if b.Weight > 0 {
			live = append(live, b)
			maxW = max(maxW, uint64(b.Weight))
		}
	}
	table := make([]uint32, size)
	if len(live) == 0 {
		return table, nil
	}
	slices.SortFunc(live, func(a, b Backend) int {
		if c := a.Addr.Unmap().Compare(b.Addr.Unmap()); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})

	// Each backend's permutation of the slots is pos + j*skip (mod size); pos holds where
	// it continues. 32-bit arithmetic: size < 2^21, so pos + skip never overflows.
	type perm struct{ pos, skip, id, weight, credit uint32 }
	m := size
	ps := make([]perm, len(live))
	equal := true
	for i, b := range live {
		a := b.Addr.Unmap().As16()
		h1 := hashAddr(a, 0x6c62272e07bb0142)
		h2 := hashAddr(a, 0x9e3779b97f4a7c15)
		ps[i] = perm{pos: uint32(h1 % uint64(m)), skip: uint32(h2%uint64(m-1) + 1), id: b.ID, weight: b.Weight}
		equal = equal && uint64(b.Weight) == maxW
	}
	// take gives backend p the next free slot of its permutation.
	take := func(p *perm) {
		pos, skip := p.pos, p.skip
		for table[pos] != 0 {
			pos += skip
			if pos >= m {
				pos -= m
			}
		}
		table[pos] = p.id
		pos += skip
		if pos >= m {
			pos -= m
		}
		p.pos = pos
	}
	filled := uint32(0)
	if equal {
		// Equal weights: one slot per backend per round, the paper's population.
		for {
			for i := range ps {
				take(&ps[i])
				if filled++; filled == m {
					return table, nil
				}
			}
		}
	}
	mw := uint32(maxW)
	for {
		for i := range ps {
			p := &ps[i]
			p.credit += p.weight
			for p.credit >= mw {
				p.credit -= mw
				take(p)
				if filled++; filled == m {
					return table, nil
				}
			}
		}
	}
}

// BenchmarkMaglevVsPrev builds the same tables with MaglevTable and with maglevPrev in
// the same loop and reports the ratio of their times (MaglevTable's over maglevPrev's).
func BenchmarkMaglevVsPrev(b *testing.B) {
	weighted := func(i int) uint32 { return uint32(1 + i%4) }
	for _, c := range []struct {
		n, size int
		weight  func(int) uint32
	}{{10, 257, one}, {10, 4099, one}, {10, 16411, one}, {10, 32771, one}, {10, 65537, one}, {100, 65537, one}, {1000, 65537, one}, {10, 1048573, one}, {10, 4099, weighted}, {10, 65537, weighted}, {1000, 65537, weighted}} {
		name := fmt.Sprintf("backends=%d/slots=%d", c.n, c.size)
		if c.weight(1) != 1 {
			name += "/weighted"
		}
		b.Run(name, func(b *testing.B) {
			bs := nBackends(c.n, c.weight)
			var ours, prev int64
			minOurs, minPrev := int64(math.MaxInt64), int64(math.MaxInt64)
			for b.Loop() {
				t0 := nanotime()
				if _, err := MaglevTable(bs, uint32(c.size)); err != nil {
					b.Fatal(err)
				}
				t1 := nanotime()
				if _, err := maglevPrev(bs, uint32(c.size)); err != nil {
					b.Fatal(err)
				}
				t2 := nanotime()
				ours += t1 - t0
				prev += t2 - t1
				minOurs, minPrev = min(minOurs, t1-t0), min(minPrev, t2-t1)
			}
			b.ReportMetric(float64(ours)/float64(b.N)/1e6, "ms/table")
			b.ReportMetric(float64(prev)/float64(b.N)/1e6, "prev-ms/table")
			b.ReportMetric(float64(ours)/float64(prev), "ratio")
			// the fastest build of each, which the load of a shared machine distorts least
			b.ReportMetric(float64(minOurs)/1e6, "min-ms")
			b.ReportMetric(float64(minPrev)/1e6, "prev-min-ms")
			b.ReportMetric(float64(minOurs)/float64(minPrev), "min-ratio")
		})
	}
}
