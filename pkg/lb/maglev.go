package lb

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"

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
	m := size
	ps := make([]maglevPerm, len(live))
	equal := true
	for i, b := range live {
		a := b.Addr.Unmap().As16()
		h1 := hashAddr(a, 0x6c62272e07bb0142)
		h2 := hashAddr(a, 0x9e3779b97f4a7c15)
		ps[i] = maglevPerm{pos: uint32(h1 % uint64(m)), skip: uint32(h2%uint64(m-1) + 1), id: b.ID, weight: b.Weight}
		equal = equal && uint64(b.Weight) == maxW
	}
	if equal {
		maglevPopulate(table, ps, 0) // one slot per backend per round: the paper's population
	} else {
		maglevPopulate(table, ps, uint32(maxW))
	}
	return table, nil
}

// maglevPerm is one backend's state in the population: its permutation (the next slot
// to try, pos, and the step, skip), its id, weight and credit, and, once needed, inv,
// the inverse of skip modulo the table size.
type maglevPerm struct{ pos, skip, id, weight, credit, inv uint32 }

// maglevBitmaps keeps the population's bitmaps of filled slots between builds.
var maglevBitmaps = sync.Pool{New: func() any { return new([]uint64) }}

// maglevPopulate fills table, giving the backends slots in turn (one per round each if
// mw is 0, else by weight: each round a backend earns weight/mw of a turn and takes a
// slot when it has a whole turn), each the first free slot of its permutation, as the
// paper's population does. It finds that slot in ways that all give the same slot:
//   - while many slots are free, by walking the permutation (pos, pos+skip, ...) over a
//     bitmap of the filled slots, which stays in the CPU's L1 cache (the table, which
//     the walk used to test, does not at 65537 slots), stepping without a branch;
//   - once 30% are filled (equal weights), testing four slots of the permutation at a
//     time, computed from pos and not each from the one before;
//   - once fewer than 0.7 * sqrt(size) are free (a walk then costs size/free steps on
//     average), by taking, of the free slots s, the one that comes first from pos: the
//     least (s - pos) * skip^-1 mod size, the number of steps from pos to s.
//
// Small tables, which stay in the CPU's cache, take the plain walk over the table, as
// do sizes of 2^31 and more (no ring is that big; the arithmetic below needs less).
func maglevPopulate(table []uint32, ps []maglevPerm, mw uint32) {
	m := uint32(len(table))
	if m < maglevSmall || m >= 1<<31 {
		maglevPopulatePlain(table, ps, mw)
		return
	}
	buf := maglevBitmaps.Get().(*[]uint64)
	defer maglevBitmaps.Put(buf)
	words := int(m+63) / 64
	if cap(*buf) < words {
		*buf = make([]uint64, words)
	}
	used := (*buf)[:words]
	clear(used)
	scanAt := uint32(math.Sqrt(float64(m)) * maglevScanFactor)
	// Phase 1, the walk. i is the backend whose turn it is.
	var i int
	if mw == 0 {
		// one slot per backend per round
		wide := min(uint32(float64(m)*maglevWideFraction), m-scanAt)
		i = maglevWalkEqual(used, ps, table, wide, 0)
		i = maglevWalkEqualWide(used, ps, table, m-scanAt-wide, i)
	} else {
		i = maglevWalkWeighted(used, ps, table, m-scanAt, mw, 0)
	}
	left := scanAt
	if left == 0 {
		return
	}
	// Phase 2, the scan, from where the walk stopped.
	s := maglevScanner{free: maglevFree(used, m, left), r: ^uint64(0) / uint64(m)}
	for {
		p := &ps[i]
		if i++; i == len(ps) {
			i = 0
		}
		if mw != 0 {
			p.credit += p.weight
			if p.credit < mw {
				continue
			}
			p.credit -= mw
		}
		pos := s.take(p, m)
		table[pos] = p.id
		if left--; left == 0 {
			return
		}
		p.pos = maglevNext(pos, p.skip, m)
	}
}

// maglevNext is (pos + skip) mod m for pos, skip < m < 2^31, without a branch: pos +
// skip - m is negative as an int32 exactly when pos + skip < m.
func maglevNext(pos, skip, m uint32) uint32 {
	t := pos + skip - m
	return t + m&uint32(int32(t)>>31)
}

// maglevWalkEqual gives count slots of table to the backends, one each in turn from
// backend i, each the first slot of its permutation whose bit in used is clear. It
// returns the backend whose turn is next.
func maglevWalkEqual(used []uint64, ps []maglevPerm, table []uint32, count uint32, i int) int {
	m := uint32(len(table))
	for range count {
		p := &ps[i]
		pos, skip := p.pos, p.skip
		for used[pos>>6]&(1<<(pos&63)) != 0 {
			pos = maglevNext(pos, skip, m)
		}
		used[pos>>6] |= 1 << (pos & 63)
		table[pos] = p.id
		p.pos = maglevNext(pos, skip, m)
		if i++; i == len(ps) {
			i = 0
		}
	}
	return i
}

// maglevWalkEqualWide is maglevWalkEqual testing four slots of a permutation at a
// time, once most slots are filled and the walk is long: it computes pos + skip,
// pos + 2*skip, pos + 3*skip and pos + 4*skip from pos (not each from the one before),
// so that the CPU works on the four at once.
func maglevWalkEqualWide(used []uint64, ps []maglevPerm, table []uint32, count uint32, i int) int {
	m := uint32(len(table))
	for range count {
		p := &ps[i]
		pos, skip := p.pos, p.skip
		// (x + d) mod m for d = s - m, s one of skip's multiples mod m
		nx := func(x, d uint32) uint32 {
			t := x + d
			return t + m&uint32(int32(t)>>31)
		}
		d1 := skip - m
		s2 := nx(skip, d1)
		d2 := s2 - m
		d4 := nx(s2, d2) - m
		for {
			c1, c2 := nx(pos, d1), nx(pos, d2)
			c3 := nx(c1, d2)
			b := used[pos>>6]>>(pos&63)&1 | used[c1>>6]>>(c1&63)&1<<1 | used[c2>>6]>>(c2&63)&1<<2 | used[c3>>6]>>(c3&63)&1<<3
			if b != 15 {
				c := [4]uint32{pos, c1, c2, c3}
				pos = c[bits.TrailingZeros64(^b)&3]
				break
			}
			pos = nx(pos, d4)
		}
		used[pos>>6] |= 1 << (pos & 63)
		table[pos] = p.id
		p.pos = nx(pos, d1)
		if i++; i == len(ps) {
			i = 0
		}
	}
	return i
}

// maglevWalkWeighted gives count slots to the backends by weight, as maglevWalkEqual
// does, writing them to table. It returns the backend whose turn is next.
func maglevWalkWeighted(used []uint64, ps []maglevPerm, table []uint32, count, mw uint32, i int) int {
	m := uint32(len(table))
	for count > 0 {
		p := &ps[i]
		if i++; i == len(ps) {
			i = 0
		}
		p.credit += p.weight
		if p.credit < mw {
			continue
		}
		p.credit -= mw
		pos, skip := p.pos, p.skip
		for used[pos>>6]&(1<<(pos&63)) != 0 {
			pos = maglevNext(pos, skip, m)
		}
		used[pos>>6] |= 1 << (pos & 63)
		table[pos] = p.id
		count--
		p.pos = maglevNext(pos, skip, m)
	}
	return i
}

// maglevPopulatePlain is the population as it was written before the faster one: each
// backend walks its permutation over the table itself.
func maglevPopulatePlain(table []uint32, ps []maglevPerm, mw uint32) {
	m := uint32(len(table))
	take := func(p *maglevPerm) {
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
	if mw == 0 {
		for {
			for i := range ps {
				take(&ps[i])
				if filled++; filled == m {
					return
				}
			}
		}
	}
	for {
		for i := range ps {
			p := &ps[i]
			p.credit += p.weight
			for p.credit >= mw {
				p.credit -= mw
				take(p)
				if filled++; filled == m {
					return
				}
			}
		}
	}
}

// maglevScanner finds the first free slot of a permutation by scanning the free slots.
type maglevScanner struct {
	free []uint32 // the free slots
	r    uint64   // 2^64 / m, for maglevScan
}

// take returns the first free slot of p's permutation from p.pos and removes it from
// the free list.
func (sc *maglevScanner) take(p *maglevPerm, m uint32) uint32 {
	if p.inv == 0 {
		p.inv = modInverse(p.skip, m)
	}
	free := sc.free
	slot, k := maglevScan(free, p.pos, p.inv, m, sc.r)
	last := len(free) - 1
	free[k] = free[last]
	sc.free = free[:last]
	return slot
}

// The population's thresholds, measured with BenchmarkMaglevVsPrev: below maglevSmall
// slots the plain walk is as fast or faster (the table stays in the cache); the
// four-wide walk takes over once maglevWideFraction of the slots are filled, the scan
// once fewer than maglevScanFactor * sqrt(size) are free. maglevSmall is a variable: a
// test sets it to 0 to run every size through the fast population.
var maglevSmall = uint32(1 << 15)

const (
	maglevWideFraction = 0.3
	maglevScanFactor   = 0.7
)

// maglevFree lists the free slots, those whose bit in used is clear.
func maglevFree(used []uint64, m, left uint32) []uint32 {
	free := make([]uint32, 0, left)
	for w, word := range used {
		for f := ^word; f != 0; f &= f - 1 {
			if s := uint32(w*64 + bits.TrailingZeros64(f)); s < m {
				free = append(free, s)
			}
		}
	}
	return free
}

// maglevScan returns the free slot that a permutation stepping by skip = inv^-1 reaches
// first from pos, and its index in free: the least (s - pos) * inv mod m, reduced with
// r = 2^64 / m (Barrett): for a product x (below 2m*m < 2^63) the quotient taken from
// x * r is x / m or one less, so one conditional subtraction finishes.
func maglevScan(free []uint32, pos, inv, m uint32, r uint64) (uint32, int) {
	mm := uint64(m)
	base := mm - uint64(pos)
	in := uint64(inv)
	best, bk := mm, 0
	for k, s := range free {
		x := (uint64(s) + base) * in
		q, _ := bits.Mul64(x, r)
		d := x - q*mm
		d = min(d, d-mm) // d < 2m: d - m wraps when d < m
		if d < best {
			best, bk = d, k
		}
	}
	return free[bk], bk
}

// modInverse returns the inverse of a modulo the prime m (0 < a < m).
func modInverse(a, m uint32) uint32 {
	t, nt := int64(0), int64(1)
	r, nr := int64(m), int64(a)
	for nr != 0 {
		q := r / nr
		t, nt = nt, t-q*nt
		r, nr = nr, r-q*nr
	}
	if t < 0 {
		t += int64(m)
	}
	return uint32(t)
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
