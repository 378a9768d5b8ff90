package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/lb"
)

// This file mirrors bpf/conntrack.h: the conntrack table is an array of buckets of
// ctWays ways; a flow's 64-bit digest names two buckets (one from each 32-bit half) and
// is what a way holds. The constants are the C's (internal/limits, from bpf/consts.c).

const (
	ctWays        = limits.CTWays
	ctBackendMask = limits.CTBackendMask
	ctRef         = limits.CTRef
	ctBusy        = limits.CTBusy
	ctEst         = limits.CTEst
	ctGenShift    = limits.CTGenShift
	ctGenMask     = limits.CTGenMask
	ctSeenShift   = limits.CTSeenShift
	ctTimeShift   = limits.CTTimeShift
	ctHashSeed    = limits.CTHashSeed

	sizeofFlowKey  = unsafe.Sizeof(prevFlowKey{})
	sizeofCtBucket = unsafe.Sizeof(xdplbCtBucket{})
)

// ctBucketCount is the number of buckets (the map's max_entries) for size flows.
func ctBucketCount(size uint32) uint32 { return (size + ctWays - 1) / ctWays }

// ctDigest mirrors ct_digest: jhash of the whole 5-tuple, seeded by family and protocol.
func ctDigest(f Flow) uint64 {
	fam := uint32(familyV6)
	if f.Src.Unmap().Is4() {
		fam = uint32(familyV4)
	}
	return flowWords64(f, false, ctHashSeed^(fam<<8|uint32(f.Proto)))
}

// ctBucketIndex mirrors ct_bucket_of: the flow's first (half 0) or second bucket.
func ctBucketIndex(digest uint64, buckets uint32, half int) uint32 {
	h := uint32(digest)
	if half == 1 {
		h = uint32(digest >> 32)
	}
	return uint32(uint64(h) * uint64(buckets) >> 32)
}

// Ranks of a way for a new flow (ct_victim), best first.
const (
	ctRankSame      = limits.CTRankSame
	ctRankEmpty     = limits.CTRankEmpty
	ctRankOnePacket = limits.CTRankOnePacket
	ctRankIdle      = limits.CTRankIdle
	ctRankNone      = limits.CTRankNone
)

func ctVictim(b *xdplbCtBucket, digest uint64) (rank, way int) {
	rank = ctRankNone
	for i, w := range b.Way {
		var r int
		switch {
		case w.State&ctBusy != 0:
			continue
		case w.State&ctBackendMask == 0:
			r = ctRankEmpty
		case w.Digest == digest:
			r = ctRankSame
		case w.State&ctRef != 0:
			continue
		case w.State&ctEst != 0:
			r = ctRankIdle
		default:
			r = ctRankOnePacket
		}
		if r < rank {
			rank, way = r, i
		}
	}
	return rank, way
}

// ctPlace writes digest with state into its buckets b1 and b2 (b2 may be b1) by
// ct_insert's rule, with no other writer (the loader's migration). It reports whether
// the way taken held another flow.
func ctPlace(b1, b2 *xdplbCtBucket, digest, state uint64) (evicted bool) {
	bk := b1
	rank, way := ctVictim(b1, digest)
	if rank != ctRankSame && b2 != b1 {
		if r2, w2 := ctVictim(b2, digest); r2 < rank && (r2 == ctRankSame || rank > ctRankEmpty) {
			bk, rank, way = b2, r2, w2
		}
	}
	if rank == ctRankNone {
		for i := range b1.Way {
			b1.Way[i].State &^= ctRef
		}
		way = int(digest & uint64(ctWays-1))
	}
	w := &bk.Way[way]
	evicted = w.State&ctBackendMask != 0 && w.Digest != digest
	w.Digest, w.State = digest, state&^ctGenMask|ctNextGen(w.State)
	return evicted
}

// ctNextGen mirrors ct_next_gen: the claim generation a writer of a way in state s writes.
func ctNextGen(s uint64) uint64 { return (s + 1<<ctGenShift) & ctGenMask }

// ctFind returns the way of b holding digest, or nil.
func ctFind(b *xdplbCtBucket, digest uint64) *xdplbCtWay {
	for i, w := range b.Way {
		if w.State&ctBackendMask != 0 && w.State&ctBusy == 0 && w.Digest == digest {
			return &b.Way[i]
		}
	}
	return nil
}

// ConntrackLookup returns the backend id conntrack holds for a flow.
func (d *Dataplane) ConntrackLookup(f Flow) (uint32, bool, error) {
	return ConntrackLookupIn(d.objs.Conntrack, f)
}

// ConntrackLookupIn returns the backend id a conntrack map (the pinned `conntrack`)
// holds for a flow.
func ConntrackLookupIn(m *ebpf.Map, f Flow) (uint32, bool, error) {
	if err := isCtMap(m); err != nil {
		return 0, false, err
	}
	digest := ctDigest(f)
	n := m.MaxEntries()
	for half := range 2 {
		var b xdplbCtBucket
		if err := m.Lookup(ctBucketIndex(digest, n, half), &b); err != nil {
			return 0, false, fmt.Errorf("read conntrack: %w", err)
		}
		if w := ctFind(&b, digest); w != nil {
			return uint32(w.State & ctBackendMask), true, nil
		}
	}
	return 0, false, nil
}

// ConntrackCount counts the conntrack entries (a walk of the table; for tests and
// occupancy reports, not for a hot path).
func (d *Dataplane) ConntrackCount() (int, error) { return ConntrackEntries(d.objs.Conntrack) }

// ConntrackCapacity is how many entries a conntrack map (the pinned `conntrack`) holds.
func ConntrackCapacity(m *ebpf.Map) int { return int(m.MaxEntries()) * int(ctWays) }

// isCtMap says whether m is this release's conntrack table.
func isCtMap(m *ebpf.Map) error {
	if m.Type() != ebpf.Array || m.ValueSize() != uint32(sizeofCtBucket) {
		return fmt.Errorf("conntrack map of type %v, value %d bytes: not this release's", m.Type(), m.ValueSize())
	}
	return nil
}

// ConntrackEntries counts the entries of a conntrack map (the pinned `conntrack`).
func ConntrackEntries(m *ebpf.Map) (int, error) {
	if err := isCtMap(m); err != nil {
		return 0, err
	}
	total := 0
	err := ctWalk(m, func(b *xdplbCtBucket) {
		for _, w := range b.Way {
			if w.State&ctBackendMask != 0 {
				total++
			}
		}
	})
	return total, err
}

// ctWalk calls fn for every bucket of a conntrack array.
func ctWalk(m *ebpf.Map, fn func(*xdplbCtBucket)) error {
	return batchWalk(m, func(_ *uint32, b *xdplbCtBucket) { fn(b) })
}

// batchWalk calls fn for every entry of m, read in batches of 4096.
func batchWalk[K, V any](m *ebpf.Map, fn func(*K, *V)) error {
	const chunk = 4096
	keys := make([]K, chunk)
	vals := make([]V, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && n == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", m, err)
		}
	}
}

// prevFlowKey and prevCtEntry are the key and value of the LRU-hash conntrack layout, which
// Load converts when it finds one pinned (bpf/lb_structs.h struct flow_key is the key).
type prevFlowKey struct {
	Src    [16]byte
	Dst    [16]byte
	Sport  uint16 // network order
	Dport  uint16
	Proto  uint8
	Family uint8
	_      uint16
}

type prevCtEntry struct {
	LastSeenNs uint64
	BackendID  uint32
	_          uint32
}

// flowOfKey turns an LRU-hash conntrack key back into a Flow.
func flowOfKey(k *prevFlowKey) Flow {
	var src, dst netip.Addr
	if k.Family == familyV4 {
		src = netip.AddrFrom4([4]byte(k.Src[:4]))
		dst = netip.AddrFrom4([4]byte(k.Dst[:4]))
	} else {
		src = netip.AddrFrom16(k.Src)
		dst = netip.AddrFrom16(k.Dst)
	}
	return Flow{Src: src, Dst: dst, Sport: htons(k.Sport), Dport: htons(k.Dport), Proto: lb.Proto(k.Proto)}
}

// oldEntries calls fn with the digest and state of every entry of a pinned conntrack map
// of either shape convertConntrack takes.
func oldEntries(old *ebpf.Map, fn func(digest, state uint64)) error {
	switch {
	case old.Type() == ebpf.LRUHash && old.KeySize() == uint32(sizeofFlowKey) && old.ValueSize() == 16:
		return batchWalk(old, func(k *prevFlowKey, v *prevCtEntry) {
			if v.BackendID == 0 || uint64(v.BackendID) > ctBackendMask {
				return
			}
			// Seen in the clock's units (CT_TIME_SHIFT); 0 for TCP, as the program writes.
			seen := uint64(uint32(v.LastSeenNs>>ctTimeShift)) << ctSeenShift
			fn(ctDigest(flowOfKey(k)), uint64(v.BackendID)|ctRef|ctEst|seen)
		})
	case old.Type() == ebpf.Array && old.ValueSize() == uint32(sizeofCtBucket):
		return ctWalk(old, func(b *xdplbCtBucket) {
			for _, w := range b.Way {
				if w.State&ctBackendMask != 0 && w.State&ctBusy == 0 {
					fn(w.Digest, w.State)
				}
			}
		})
	}
	return fmt.Errorf("conntrack of type %v, key %d, value %d bytes: %w", old.Type(), old.KeySize(), old.ValueSize(), ErrMigrate)
}

// convertConntrack fills a new conntrack array (m, empty) from a pinned one of another
// shape: the LRU-hash layout, or a bucket array of another size. Entries are placed as
// the program would place them; the LRU hash's entries are marked
// established and referenced (they are flows that sent packets), a bucket array's keep
// their marks. It returns how many were placed and how many another entry displaced.
func convertConntrack(old, m *ebpf.Map) (placed, displaced int, err error) {
	buckets := make([]xdplbCtBucket, m.MaxEntries())
	n := uint32(len(buckets))
	place := func(digest, state uint64) {
		if ctPlace(&buckets[ctBucketIndex(digest, n, 0)], &buckets[ctBucketIndex(digest, n, 1)], digest, state) {
			displaced++
		}
		placed++
	}
	if err := oldEntries(old, place); err != nil {
		return placed, displaced, err
	}
	keys := make([]uint32, len(buckets))
	for i := range keys {
		keys[i] = uint32(i)
	}
	const chunk = 65536
	for i := 0; i < len(keys); i += chunk {
		j := min(i+chunk, len(keys))
		if _, err := m.BatchUpdate(keys[i:j], buckets[i:j], nil); err != nil {
			return placed, displaced, fmt.Errorf("write buckets %d..: %w", i, err)
		}
	}
	return placed, displaced, nil
}
