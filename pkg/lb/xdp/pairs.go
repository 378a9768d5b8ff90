package xdp

import (
	"errors"
	"fmt"
	"math/bits"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/internal/limits"
)

// This file keeps vip_backends (bpf/members.h): which backends each VIP has now, as
// (VIP id, backend id) pairs placed in the bucket their key hashes to or the next one. A
// pair's index (bucket * pairWays + way) is also the index of its counters in pair_stats,
// so each backend is counted under each VIP it serves. The program follows a conntrack
// entry only to a backend its VIP has here.

const (
	pairWays    = limits.PairWays
	pairHashMul = limits.PairHashMul
	// DefaultPairBuckets is the vip_backends size (buckets of 16 pairs) when the
	// configuration needs fewer: 16,384 pairs.
	DefaultPairBuckets = 1024
	// MaxPairBuckets bounds PairBucketsFor: 4 Mi pairs.
	MaxPairBuckets = 1 << 18
)

// PairBucketsFor returns the vip_backends size (buckets, a power of two) for a
// configuration of n (VIP, backend) pairs: at most half full, so a pair almost never finds
// both its buckets full, with room for the configuration to grow by reloads. Kernel
// memory: 64 bytes per bucket, and 16 bytes per pair slot and CPU for pair_stats.
func PairBucketsFor(n int) uint32 {
	need := uint64(n) * 2 / uint64(pairWays)
	b := uint32(DefaultPairBuckets)
	for uint64(b) < need && b < MaxPairBuckets {
		b <<= 1
	}
	return b
}

func pairKey(vipID, backendID uint32) uint32 { return vipID<<16 | backendID&0xffff }

// pairTable mirrors vip_backends; its own lock, since SetVIP runs concurrently for
// different VIPs.
type pairTable struct {
	mu      sync.Mutex
	m       *ebpf.Map
	stats   *ebpf.Map
	shift   uint32
	buckets [][pairWays]uint32
	index   map[uint32]uint32            // key -> pair index
	byVIP   map[uint32]map[uint32]uint32 // vip id -> backend id -> pair index
}

func pairShift(buckets uint32) uint32 { return 32 - uint32(bits.TrailingZeros32(buckets)) }

// pairBucket mirrors member_index's first bucket.
func (t *pairTable) firstBucket(key uint32) uint32 { return (key * pairHashMul) >> t.shift }

func newPairTable(m, stats *ebpf.Map) (*pairTable, error) {
	n := m.MaxEntries()
	if n < 2 || n&(n-1) != 0 {
		return nil, fmt.Errorf("vip_backends has %d buckets: not a power of two >= 2", n)
	}
	t := &pairTable{m: m, stats: stats, shift: pairShift(n), buckets: make([][pairWays]uint32, n),
		index: map[uint32]uint32{}, byVIP: map[uint32]map[uint32]uint32{}}
	err := batchWalk(m, func(k *uint32, b *xdplbPairBucket) {
		if *k >= n {
			return
		}
		t.buckets[*k] = b.Key
		for w, key := range b.Key {
			if key != 0 {
				t.note(key, *k*pairWays+uint32(w))
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

func (t *pairTable) note(key, idx uint32) {
	t.index[key] = idx
	vip, be := key>>16, key&0xffff
	if t.byVIP[vip] == nil {
		t.byVIP[vip] = map[uint32]uint32{}
	}
	t.byVIP[vip][be] = idx
}

// add makes backend id a member of the VIP (its counters start at zero) unless it is.
func (t *pairTable) add(vipID, backendID uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := pairKey(vipID, backendID)
	if _, ok := t.index[key]; ok {
		return nil
	}
	mask := uint32(len(t.buckets) - 1)
	for _, b := range []uint32{t.firstBucket(key), (t.firstBucket(key) + 1) & mask} {
		for w, k := range t.buckets[b] {
			if k != 0 {
				continue
			}
			idx := b*pairWays + uint32(w)
			// Counters first: a packet counted under the new pair counts from zero.
			if err := t.stats.Put(idx, make([]xdplbBackendCounters, ebpf.MustPossibleCPU())); err != nil {
				return fmt.Errorf("reset counters of vip %d backend %d: %w", vipID, backendID, err)
			}
			nb := t.buckets[b]
			nb[w] = key
			if err := t.m.Put(b, &xdplbPairBucket{Key: nb}); err != nil {
				return fmt.Errorf("add backend %d to vip %d: %w", backendID, vipID, err)
			}
			t.buckets[b] = nb
			t.note(key, idx)
			return nil
		}
	}
	return fmt.Errorf("add backend %d to vip %d: both its buckets of vip_backends are full (%d pairs in %d buckets): %w; restart to size it for the configuration",
		backendID, vipID, len(t.index), len(t.buckets), ErrFull)
}

// remove ends backend id's membership of the VIP: conntrack entries of the VIP naming it
// are no longer followed.
func (t *pairTable) remove(vipID, backendID uint32) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := pairKey(vipID, backendID)
	idx, ok := t.index[key]
	if !ok {
		return nil
	}
	b, w := idx/pairWays, idx%pairWays
	nb := t.buckets[b]
	nb[w] = 0
	if err := t.m.Put(b, &xdplbPairBucket{Key: nb}); err != nil {
		return fmt.Errorf("remove backend %d from vip %d: %w", backendID, vipID, err)
	}
	t.buckets[b] = nb
	delete(t.index, key)
	delete(t.byVIP[vipID], backendID)
	if len(t.byVIP[vipID]) == 0 {
		delete(t.byVIP, vipID)
	}
	return nil
}

// members returns the backend ids the VIP has.
func (t *pairTable) members(vipID uint32) []uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]uint32, 0, len(t.byVIP[vipID]))
	for be := range t.byVIP[vipID] {
		out = append(out, be)
	}
	return out
}

// lookup returns the pair index of backend id under the VIP.
func (t *pairTable) lookup(vipID, backendID uint32) (uint32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	idx, ok := t.index[pairKey(vipID, backendID)]
	return idx, ok
}

// setMembers makes the VIP's members exactly ids: added first (before the ring that names
// them), the others removed by the caller's removeStale after the new ring is in.
func (t *pairTable) setMembers(vipID uint32, ids []uint32) error {
	var errs []error
	for _, id := range ids {
		errs = append(errs, t.add(vipID, id))
	}
	return errors.Join(errs...)
}

// vipsOf returns the VIP ids that have backend id as a member.
func (t *pairTable) vipsOf(backendID uint32) []uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []uint32
	for vip, bes := range t.byVIP {
		if _, ok := bes[backendID]; ok {
			out = append(out, vip)
		}
	}
	return out
}

// removeStale removes the VIP's members not in keep.
func (t *pairTable) removeStale(vipID uint32, keep []uint32) error {
	want := make(map[uint32]bool, len(keep))
	for _, id := range keep {
		want[id] = true
	}
	var errs []error
	for _, id := range t.members(vipID) {
		if !want[id] {
			errs = append(errs, t.remove(vipID, id))
		}
	}
	return errors.Join(errs...)
}

// PairCounters returns the counters of backend id under the VIP with vipID.
func (d *Dataplane) PairCounters(vipID, backendID uint32) (Counters, bool, error) {
	idx, ok := d.pairs.lookup(vipID, backendID)
	if !ok {
		return Counters{}, false, nil
	}
	var per []xdplbBackendCounters
	if err := d.objs.PairStats.Lookup(idx, &per); err != nil {
		return Counters{}, false, fmt.Errorf("read counters of vip %d backend %d: %w", vipID, backendID, err)
	}
	var c Counters
	for _, p := range per {
		c.Packets += p.Packets
		c.Bytes += p.Bytes
	}
	return c, true, nil
}

// Members returns the backend ids the VIP with vipID has in vip_backends.
func (d *Dataplane) Members(vipID uint32) []uint32 { return d.pairs.members(vipID) }

// pinnedPairBuckets returns the size of the vip_backends map pinned in dir, or 0.
func pinnedPairBuckets(dir string) uint32 {
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "vip_backends"), nil)
	if err != nil {
		return 0
	}
	defer m.Close()
	if m.Type() != ebpf.Array || m.ValueSize() != pairWays*4 {
		return 0
	}
	return m.MaxEntries()
}
