package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/internal/limits"
)

// The ring layout (bpf/lb_maps.h): one flat array, rings, of 64-byte blocks of
// RingBlockSlots 16-bit backend ids, and ring_sel, by VIP id, naming the two halves of
// the VIP's ring (a range of blocks and a size each) and the active one. A swap writes
// the inactive half with one batch update, then names it in ring_sel (a byte range no
// reader reads), then flips ring_sel.active (one byte changes): readers see the old ring
// or the new one, whole, and no map-in-map update waits for an RCU grace period.
//
// Before a half that was active is written again, readers that picked it before the flip
// must be gone: one RCU grace period (barrier) after the flip. Barriers are shared: a
// pass that rewrites 1,000 VIPs waits for one, and only if a VIP flipped since the last.
// Blocks of deleted VIPs are freed the same way, after a barrier.

// RingBlockSlots is RING_BLOCK_SLOTS: slots in one entry of the rings array.
const RingBlockSlots = limits.RingBlockSlots

// maxSlotID is the largest backend id a 16-bit ring slot holds.
const maxSlotID = 1<<16 - 1

// DefaultRingSlots is the default size of the rings array, in slots: both halves of 64
// VIPs at the default ring size (16 MiB of kernel memory).
const DefaultRingSlots = 2 * 64 * 65537

// RingSlotsFor returns the rings array size (in slots) for VIPs with the given ring
// sizes: both halves of each, rounded up to whole blocks, plus a quarter for VIPs added
// later without a reload of the program, and at least DefaultRingSlots.
func RingSlotsFor(sizes []uint32) uint64 {
	var n uint64
	for _, s := range sizes {
		n += 2 * blocksFor(s) * RingBlockSlots
	}
	n += n / 4
	return max(n, DefaultRingSlots)
}

func blocksFor(size uint32) uint64 { return (uint64(size) + RingBlockSlots - 1) / RingBlockSlots }

// blockRange is a range of entries of the rings array.
type blockRange struct{ start, n uint32 }

// blockAlloc hands out ranges of the rings array, first fit; free ranges are kept sorted
// and merged.
type blockAlloc struct {
	free  []blockRange
	total uint32
	used  uint64
}

func newBlockAlloc(total uint32) *blockAlloc {
	a := &blockAlloc{total: total}
	if total > 0 {
		a.free = []blockRange{{0, total}}
	}
	return a
}

func (a *blockAlloc) alloc(n uint32) (uint32, bool) {
	for i, r := range a.free {
		if r.n < n {
			continue
		}
		start := r.start
		if r.n == n {
			a.free = slices.Delete(a.free, i, i+1)
		} else {
			a.free[i] = blockRange{r.start + n, r.n - n}
		}
		a.used += uint64(n)
		return start, true
	}
	return 0, false
}

// take marks a range used (adopting pinned rings); it fails if any of it is not free.
func (a *blockAlloc) take(start, n uint32) error {
	for i, r := range a.free {
		if start < r.start || uint64(start)+uint64(n) > uint64(r.start)+uint64(r.n) {
			continue
		}
		var parts []blockRange
		if start > r.start {
			parts = append(parts, blockRange{r.start, start - r.start})
		}
		if end, rend := start+n, r.start+r.n; end < rend {
			parts = append(parts, blockRange{end, rend - end})
		}
		a.free = slices.Replace(a.free, i, i+1, parts...)
		a.used += uint64(n)
		return nil
	}
	return fmt.Errorf("ring blocks %d..%d: used twice or outside the rings array (%d blocks)", start, uint64(start)+uint64(n)-1, a.total)
}

func (a *blockAlloc) release(start, n uint32) {
	if n == 0 {
		return
	}
	i, _ := slices.BinarySearchFunc(a.free, start, func(r blockRange, s uint32) int {
		switch {
		case r.start < s:
			return -1
		case r.start > s:
			return 1
		}
		return 0
	})
	a.free = slices.Insert(a.free, i, blockRange{start, n})
	a.used -= uint64(n)
	// Merge with the neighbours.
	if i+1 < len(a.free) && a.free[i].start+a.free[i].n == a.free[i+1].start {
		a.free[i].n += a.free[i+1].n
		a.free = slices.Delete(a.free, i+1, i+2)
	}
	if i > 0 && a.free[i-1].start+a.free[i-1].n == a.free[i].start {
		a.free[i-1].n += a.free[i].n
		a.free = slices.Delete(a.free, i, i+1)
	}
}

// pendingFree is a range freed once a barrier started after seq completed.
type pendingFree struct {
	r   blockRange
	seq uint64
}

// ringState is the Go side of the ring layout: the allocator, the last ring_sel value
// written per VIP, and the barrier bookkeeping.
type ringState struct {
	mu      sync.Mutex
	alloc   *blockAlloc
	sel     map[uint32]xdplbRingSelect // by VIP id
	sums    map[uint32]uint64          // by VIP id: ringSum of the active half this process wrote or read
	flipSeq map[uint32]uint64          // barrier seq at the VIP's last flip
	anyFlip uint64                     // barrier seq at the last flip of any VIP
	flipped bool                       // some VIP flipped since this process started
	pending []pendingFree

	barrierMu sync.Mutex // serialises barriers
	bmu       sync.Mutex // guards started, done
	started   uint64     // barriers started
	done      uint64     // seq of the last barrier completed
	barrier   *ebpf.Map  // array of maps: an update waits for an RCU grace period
	inner     *ebpf.Map
	barriers  uint64 // barriers run (metrics, tests)
}

func newRingState(blocks uint32) (*ringState, error) {
	inner := &ebpf.MapSpec{Name: "ring_barrier_in", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}
	im, err := ebpf.NewMap(inner)
	if err != nil {
		return nil, fmt.Errorf("create ring barrier: %w", err)
	}
	om, err := ebpf.NewMap(&ebpf.MapSpec{Name: "ring_barrier", Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 1, InnerMap: inner})
	if err != nil {
		im.Close()
		return nil, fmt.Errorf("create ring barrier: %w", err)
	}
	return &ringState{alloc: newBlockAlloc(blocks), sel: map[uint32]xdplbRingSelect{}, sums: map[uint32]uint64{}, flipSeq: map[uint32]uint64{},
		barrier: om, inner: im}, nil
}

func (s *ringState) close() {
	if s == nil {
		return
	}
	s.barrier.Close()
	s.inner.Close()
}

// seq returns the number of barriers started so far: a flip recorded with it is covered
// by any barrier with a higher sequence number.
func (s *ringState) seq() uint64 {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	return s.started
}

func (s *ringState) completed() uint64 {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	return s.done
}

// waitBarrier returns once a barrier that started after seq has completed, running one
// if none has: every BPF program that ran before it (and so may have read a ring half
// flipped away at seq) has finished.
func (s *ringState) waitBarrier(seq uint64) error {
	s.barrierMu.Lock()
	defer s.barrierMu.Unlock()
	if s.completed() > seq {
		return nil
	}
	s.bmu.Lock()
	s.started++
	n := s.started
	s.bmu.Unlock()
	// The kernel waits for an RCU grace period after every update of a map-in-map from
	// user space (maybe_wait_bpf_programs).
	if err := s.barrier.Put(uint32(0), s.inner); err != nil {
		return fmt.Errorf("ring barrier: %w", err)
	}
	s.bmu.Lock()
	s.done = n
	s.barriers++
	s.bmu.Unlock()
	return nil
}

// reclaim frees pending ranges whose barrier has completed (s.mu held).
func (s *ringState) reclaim() {
	done := s.completed()
	kept := s.pending[:0]
	for _, p := range s.pending {
		if done > p.seq {
			s.alloc.release(p.r.start, p.r.n)
		} else {
			kept = append(kept, p)
		}
	}
	s.pending = kept
}

// allocBlocks allocates n blocks, waiting for a barrier to reclaim freed VIPs' blocks if
// the array is full.
func (s *ringState) allocBlocks(n uint32) (uint32, error) {
	s.mu.Lock()
	s.reclaim()
	start, ok := s.alloc.alloc(n)
	var wait uint64
	if !ok && len(s.pending) > 0 {
		wait = s.pending[len(s.pending)-1].seq
	}
	havePending := len(s.pending) > 0
	s.mu.Unlock()
	if ok {
		return start, nil
	}
	if havePending {
		if err := s.waitBarrier(wait); err != nil {
			return 0, err
		}
		s.mu.Lock()
		s.reclaim()
		start, ok = s.alloc.alloc(n)
		s.mu.Unlock()
		if ok {
			return start, nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return 0, fmt.Errorf("rings array: no %d free blocks (%d of %d used): %w; raise the ring memory or lower ring sizes, then restart",
		n, s.alloc.used, s.alloc.total, ErrFull)
}

// adopt records the rings of a VIP found in the pinned maps.
func (s *ringState) adopt(id uint32, sel xdplbRingSelect) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range sel.Half {
		if h.Size == 0 {
			continue
		}
		if err := s.alloc.take(h.Block, uint32(blocksFor(h.Size))); err != nil {
			return fmt.Errorf("vip %d: %w", id, err)
		}
	}
	s.sel[id] = sel
	s.flipSeq[id] = 0 // flipped at an unknown time: a barrier before the next write
	return nil
}

// pinnedRingBlocks returns the size of the flat rings array pinned in dir, or 0.
func pinnedRingBlocks(dir string) uint32 {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "rings"), nil)
	if err != nil {
		return 0
	}
	defer m.Close()
	if m.Type() != ebpf.Array || m.ValueSize() != uint32(binary.Size(xdplbRingBlock{})) {
		return 0
	}
	return m.MaxEntries()
}

// packRing converts a Maglev table into ring blocks.
func packRing(table []uint32) ([]xdplbRingBlock, error) {
	blocks := make([]xdplbRingBlock, blocksFor(uint32(len(table))))
	for i, id := range table {
		if id > maxSlotID {
			return nil, fmt.Errorf("backend id %d does not fit a ring slot (at most %d)", id, maxSlotID)
		}
		blocks[uint64(i)/RingBlockSlots].Slot[uint64(i)%RingBlockSlots] = uint16(id)
	}
	return blocks, nil
}

// writeRing makes table the VIP's ring: written whole into the inactive half, then
// flipped in. fresh: the VIP has no entry in the vips map yet, so no reader can see its
// ring_sel entry and both halves may be written at once. Calls for the same VIP must not
// run concurrently.
func (d *Dataplane) writeRing(id uint32, table []uint32, fresh bool) error {
	s := d.rings
	size := uint32(len(table))
	blocks, err := packRing(table)
	if err != nil {
		return err
	}
	s.mu.Lock()
	sel, known := s.sel[id]
	flip, flipped := s.flipSeq[id]
	s.mu.Unlock()
	if fresh {
		// Whatever ring_sel holds under a reused id belongs to a deleted VIP whose blocks
		// were freed (after a barrier) by DeleteVIP.
		sel, known = xdplbRingSelect{}, false
	}
	sum := ringSum(blocks)
	if known {
		// The ring readers use already holds this table (a restart's first pass, a
		// change of something else of the VIP): no write, no flip.
		s.mu.Lock()
		last, ok := s.sums[id]
		s.mu.Unlock()
		same := ok && last == sum
		if !ok {
			var err error
			if same, err = d.activeRingIs(sel, blocks); err != nil {
				return err
			}
		}
		if same {
			s.mu.Lock()
			s.sums[id] = sum
			s.mu.Unlock()
			return nil
		}
	}
	inactive := uint32(0)
	if known {
		inactive = 1 - sel.Active&1
		if flipped {
			// Readers that picked the inactive half before the last flip must be gone.
			if err := s.waitBarrier(flip); err != nil {
				return err
			}
		}
	}
	h := sel.Half[inactive]
	if h.Size == 0 || blocksFor(h.Size) != uint64(len(blocks)) {
		if h.Size != 0 {
			s.mu.Lock()
			s.alloc.release(h.Block, uint32(blocksFor(h.Size)))
			s.mu.Unlock()
		}
		start, err := s.allocBlocks(uint32(len(blocks)))
		if err != nil {
			return err
		}
		h.Block = start
	}
	h.Size = size
	keys := make([]uint32, len(blocks))
	for i := range keys {
		keys[i] = h.Block + uint32(i)
	}
	if _, err := d.objs.Rings.BatchUpdate(keys, blocks, nil); err != nil {
		return fmt.Errorf("write ring: %w", err)
	}
	// Name the written half (readers do not read it), then flip to it.
	sel.Half[inactive] = h
	if known {
		if err := d.objs.RingSel.Put(id, &sel); err != nil {
			return fmt.Errorf("write ring selector: %w", err)
		}
	}
	sel.Active = inactive
	if err := d.objs.RingSel.Put(id, &sel); err != nil {
		return fmt.Errorf("flip ring: %w", err)
	}
	seq := s.seq()
	s.mu.Lock()
	s.sel[id] = sel
	s.sums[id] = sum
	s.flipSeq[id] = seq
	s.anyFlip, s.flipped = max(s.anyFlip, seq), true
	s.mu.Unlock()
	return nil
}

// ringSum is a checksum of a ring's blocks (FNV-1a over the slots).
func ringSum(blocks []xdplbRingBlock) uint64 {
	h := uint64(14695981039346656037)
	for i := range blocks {
		for _, v := range blocks[i].Slot {
			h = (h ^ uint64(v)) * 1099511628211
		}
	}
	return h
}

// activeRingIs reports whether sel's active half holds exactly blocks.
func (d *Dataplane) activeRingIs(sel xdplbRingSelect, blocks []xdplbRingBlock) (bool, error) {
	h := sel.Half[sel.Active&1]
	if h.Size == 0 || blocksFor(h.Size) != uint64(len(blocks)) {
		return false, nil
	}
	keys := make([]uint32, len(blocks))
	for i := range keys {
		keys[i] = h.Block + uint32(i)
	}
	have := make([]xdplbRingBlock, len(blocks))
	for i := 0; i < len(keys); i += 4096 {
		j := min(i+4096, len(keys))
		for k := i; k < j; k++ {
			if err := d.objs.Rings.Lookup(keys[k], &have[k]); err != nil {
				return false, fmt.Errorf("read ring: %w", err)
			}
		}
	}
	for i := range blocks {
		if have[i] != blocks[i] {
			return false, nil
		}
	}
	return true, nil
}

// waitFlips returns once no BPF program still reads a ring half flipped away before the
// call: a backend that the old rings named is deleted only after that, as it was when
// every swap waited for a grace period (a flow that picked it just before the swap has
// the grace period to finish its handshake).
func (d *Dataplane) waitFlips() error {
	s := d.rings
	s.mu.Lock()
	seq, flipped := s.anyFlip, s.flipped
	s.mu.Unlock()
	if !flipped {
		return nil
	}
	return s.waitBarrier(seq)
}

// freeRings releases a deleted VIP's ring blocks once the next barrier has passed.
func (d *Dataplane) freeRings(id uint32) error {
	s := d.rings
	seq := s.seq()
	s.mu.Lock()
	sel, ok := s.sel[id]
	delete(s.sel, id)
	delete(s.sums, id)
	delete(s.flipSeq, id)
	if ok {
		for _, h := range sel.Half {
			if h.Size != 0 {
				s.pending = append(s.pending, pendingFree{blockRange{h.Block, uint32(blocksFor(h.Size))}, seq})
			}
		}
	}
	s.mu.Unlock()
	if err := d.objs.RingSel.Put(id, &xdplbRingSelect{}); err != nil {
		return fmt.Errorf("clear ring selector of vip %d: %w", id, err)
	}
	return nil
}

// ringSelectors reads ring_sel whole (one batch read).
func (d *Dataplane) ringSelectors() (map[uint32]xdplbRingSelect, error) {
	out := map[uint32]xdplbRingSelect{}
	n := int(d.objs.RingSel.MaxEntries())
	keys := make([]uint32, n)
	vals := make([]xdplbRingSelect, n)
	var cursor ebpf.MapBatchCursor
	for {
		got, err := d.objs.RingSel.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < got; i++ {
			if vals[i].Half[0].Size != 0 || vals[i].Half[1].Size != 0 {
				out[keys[i]] = vals[i]
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) || got == 0 {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read ring_sel: %w", err)
		}
	}
}

// adoptRings rebuilds the allocator from the pinned ring_sel entries of the VIPs in the
// vips map. Entries of ids no VIP has are cleared.
func (d *Dataplane) adoptRings() error {
	entries, err := d.vipEntries()
	if err != nil {
		return err
	}
	sels, err := d.ringSelectors()
	if err != nil {
		return err
	}
	live := map[uint32]bool{}
	for _, m := range entries {
		live[m.Id] = true
		if sel, ok := sels[m.Id]; ok {
			if err := d.rings.adopt(m.Id, sel); err != nil {
				return err
			}
		}
	}
	for id := range sels {
		if !live[id] {
			if err := d.objs.RingSel.Put(id, &xdplbRingSelect{}); err != nil {
				return fmt.Errorf("clear ring selector of vip %d: %w", id, err)
			}
		}
	}
	return nil
}

// RingStats describe the rings array.
type RingStats struct {
	Blocks, UsedBlocks uint64
	Barriers           uint64
}

// RingStats returns the rings array's use.
func (d *Dataplane) RingStats() RingStats {
	s := d.rings
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bmu.Lock()
	defer s.bmu.Unlock()
	return RingStats{Blocks: uint64(s.alloc.total), UsedBlocks: s.alloc.used, Barriers: s.barriers}
}

// RingOf returns the active ring of the VIP with id as the data plane holds it.
func (d *Dataplane) RingOf(id uint32) ([]uint32, error) {
	var sel xdplbRingSelect
	if err := d.objs.RingSel.Lookup(id, &sel); err != nil {
		return nil, fmt.Errorf("read ring selector of vip %d: %w", id, err)
	}
	h := sel.Half[sel.Active&1]
	if h.Size == 0 {
		return nil, fmt.Errorf("vip %d: %w", id, ErrNotFound)
	}
	n := int(blocksFor(h.Size))
	out := make([]uint32, 0, h.Size)
	for i := 0; i < n; i++ {
		var b xdplbRingBlock
		if err := d.objs.Rings.Lookup(h.Block+uint32(i), &b); err != nil {
			return nil, fmt.Errorf("read ring block: %w", err)
		}
		for _, s := range b.Slot {
			if uint32(len(out)) < h.Size {
				out = append(out, uint32(s))
			}
		}
	}
	return out, nil
}
