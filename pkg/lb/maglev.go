package lb

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/l4lb/l4lb/internal/limits"
)

// DefaultRingSize is the default Maglev table size (prime).
const DefaultRingSize = limits.DefaultRingSize

// MaglevTable builds a Maglev lookup table of size slots (size must be prime) whose
// entries are backend IDs; 0 marks "no backend" and fills the table when no backend has a
// weight. It is deterministic: the same backends give the same table in any input order,
// on every node and every run, because backends are sorted by address and their
// permutations come from a fixed hash of the address.
//
// Weights are honoured in every round of the population (not only the first, as in
// Katran): each round a backend earns weight/maxWeight of a turn, and takes a slot per
// whole turn earned, so shares are proportional to weights.
func MaglevTable(backends []Backend, size uint32) ([]uint32, error) {
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

// hashAddr is a fixed 64-bit hash (splitmix64 finaliser over the two halves) of a
// 16-byte address: it must never change, or nodes running different versions would
// disagree on where flows go.
func hashAddr(a [16]byte, seed uint64) uint64 {
	h := seed
	for _, w := range []uint64{binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])} {
		h ^= w
		h += 0x9e3779b97f4a7c15
		h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9
		h = (h ^ (h >> 27)) * 0x94d049bb133111eb
		h ^= h >> 31
	}
	return h
}

func isPrime(n uint32) bool { return n >= 3 && limits.IsPrime(n) }
