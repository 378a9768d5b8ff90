package xdp

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/lb"
)

func TestBlockAlloc(t *testing.T) {
	a := newBlockAlloc(100)
	x, _ := a.alloc(30)
	y, _ := a.alloc(30)
	z, _ := a.alloc(30)
	if x != 0 || y != 30 || z != 60 {
		t.Fatalf("first fit: %d %d %d", x, y, z)
	}
	if _, ok := a.alloc(11); ok {
		t.Fatal("allocated 11 blocks of 10 free")
	}
	a.release(y, 30)
	a.release(x, 30)
	if diff := cmp.Diff([]blockRange{{0, 60}, {90, 10}}, a.free, cmp.AllowUnexported(blockRange{})); diff != "" {
		t.Fatalf("free list after releases (-want +got):\n%s", diff)
	}
	a.release(z, 30)
	if diff := cmp.Diff([]blockRange{{0, 100}}, a.free, cmp.AllowUnexported(blockRange{})); diff != "" || a.used != 0 {
		t.Fatalf("everything released: free %v used %d", a.free, a.used)
	}
	if err := a.take(10, 5); err != nil {
		t.Fatal(err)
	}
	if err := a.take(12, 5); err == nil {
		t.Fatal("took an overlapping range")
	}
	if err := a.take(98, 5); err == nil {
		t.Fatal("took a range past the end")
	}
}

// Random VIP writes, resizes and deletions on the real maps: after every step each VIP's
// active ring is its Maglev table, and no two VIPs' ring halves overlap.
func TestPrivilegedRingLayoutRandom(t *testing.T) {
	r := newRig(t, Options{RingSlots: 700000})
	rng := rand.New(rand.NewPCG(7, 11))
	sizes := []uint32{257, 1031, 4099, 8191}
	pool := make([]string, 10)
	for i := range pool {
		pool[i] = fmt.Sprintf("198.51.100.%d", i+1)
	}
	live := map[lb.VIPKey]lb.VIP{}
	for step := 0; step < 300; step++ {
		k := key("203.0.113.10", uint16(1+rng.IntN(30)), tcp)
		if _, ok := live[k]; ok && rng.IntN(4) == 0 {
			if err := r.d.DeleteVIP(k); err != nil {
				t.Fatalf("step %d: delete %s: %v", step, k, err)
			}
			delete(live, k)
		} else {
			perm := rng.Perm(len(pool))[:1+rng.IntN(5)]
			slices.Sort(perm)
			v := lb.VIP{Key: k, RingSize: sizes[rng.IntN(len(sizes))]}
			for _, i := range perm {
				v.Backends = append(v.Backends, lb.Backend{ID: uint32(i + 1), Addr: mustAddr(pool[i]), Weight: uint32(1 + rng.IntN(3))})
			}
			if _, err := r.d.SetVIP(v); err != nil {
				t.Fatalf("step %d: set %s: %v", step, k, err)
			}
			live[k] = v
		}
		ids, err := r.d.VIPs()
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != len(live) {
			t.Fatalf("step %d: %d vips in the map, want %d", step, len(ids), len(live))
		}
		sels, err := r.d.ringSelectors()
		if err != nil {
			t.Fatal(err)
		}
		var ranges []blockRange
		for k, v := range live {
			id := ids[k]
			ring, err := r.d.RingOf(id)
			if err != nil {
				t.Fatalf("step %d: %s: %v", step, k, err)
			}
			want, _ := lb.MaglevTable(v.Backends, v.RingSize)
			if !slices.Equal(ring, want) {
				t.Fatalf("step %d: %s: active ring is not its Maglev table", step, k)
			}
			for _, h := range sels[id].Half {
				if h.Size != 0 {
					ranges = append(ranges, blockRange{h.Block, uint32(blocksFor(h.Size))})
				}
			}
		}
		slices.SortFunc(ranges, func(a, b blockRange) int { return int(a.start) - int(b.start) })
		for i := 1; i < len(ranges); i++ {
			if ranges[i-1].start+ranges[i-1].n > ranges[i].start {
				t.Fatalf("step %d: ring halves overlap: %v and %v", step, ranges[i-1], ranges[i])
			}
		}
		// Every used block is a live VIP's half or waits for a grace period to be freed.
		var held uint64
		for _, rg := range ranges {
			held += uint64(rg.n)
		}
		r.d.rings.mu.Lock()
		for _, p := range r.d.rings.pending {
			held += uint64(p.r.n)
		}
		r.d.rings.mu.Unlock()
		if used := r.d.RingStats().UsedBlocks; used != held {
			t.Fatalf("step %d: allocator says %d blocks used, rings and pending frees hold %d", step, used, held)
		}
	}
	t.Logf("%d vips left, rings %+v", len(live), r.d.RingStats())
}
