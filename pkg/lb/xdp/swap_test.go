package xdp

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/pkg/lb"
)

// Rings are swapped while packets run through the program from other goroutines: every
// packet must get the backend that one of the rings live during its run gives its flow,
// never a slot of a half-written ring, a stale half or an empty slot. The rings cycle
// through four backend sets and three sizes (so halves are reallocated too), and TCP RSTs
// of unknown flows are used: they are forwarded by the ring without a conntrack entry, so
// every packet reads the ring.
func TestPrivilegedRingSwapUnderTraffic(t *testing.T) {
	r := newRig(t, Options{})
	k := key("203.0.113.10", 80, tcp)
	sizes := []uint32{257, 1031, 4099}
	var sets [][]lb.Backend
	for s := 0; s < 4; s++ {
		var addrs []string
		for i := 0; i < 5; i++ {
			addrs = append(addrs, fmt.Sprintf("198.51.100.%d", 10+s*5+i))
		}
		sets = append(sets, backends(uint32(1+s*5), addrs...))
	}
	addrOf := map[netip.Addr]uint32{}
	for _, set := range sets {
		for _, b := range set {
			addrOf[b.Addr] = b.ID
		}
	}
	const swaps = 100
	vips := make([]lb.VIP, swaps+1)
	tables := make([][]uint32, swaps+1)
	for g := range vips {
		vips[g] = lb.VIP{Key: k, Backends: sets[g%len(sets)], RingSize: sizes[g%len(sizes)]}
		var err error
		if tables[g], err = lb.MaglevTable(vips[g].Backends, vips[g].RingSize); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.d.SetVIP(vips[0]); err != nil {
		t.Fatal(err)
	}
	var gen atomic.Int64 // rings 0..gen are complete; gen+1 may be flipping in
	const flows = 64
	frames := make([][]byte, flows)
	hashes := make([]uint32, flows)
	for i := range frames {
		p := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: uint16(20000 + i*7), dport: 80, flags: "R"}
		frames[i] = p.build(t)
		hashes[i] = FlowHash(p.flow(), 0)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var packets, bad atomic.Int64
	var firstBad atomic.Value
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				f := i % flows
				g0 := gen.Load()
				ret, out, err := runOnce(r.d.Program(), frames[f])
				g1 := gen.Load()
				if err != nil {
					firstBad.CompareAndSwap(nil, err.Error())
					bad.Add(1)
					return
				}
				packets.Add(1)
				got := uint32(0)
				if ret == xdpTx && len(out) >= 34 {
					a, _ := netip.AddrFromSlice(out[30:34])
					got = addrOf[a]
				}
				ok := false
				for g := g0; g <= min(g1+1, swaps); g++ {
					if got != 0 && got == tables[g][RingSlot(SlotModulo, hashes[f], uint32(len(tables[g])))] {
						ok = true
					}
				}
				if !ok {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("flow %d: verdict %d backend %d while rings %d..%d were live", f, ret, got, g0, g1+1))
				}
			}
		}()
	}
	for g := 1; g <= swaps; g++ {
		if _, err := r.d.SetVIP(vips[g]); err != nil {
			close(stop)
			wg.Wait()
			t.Fatal(err)
		}
		gen.Store(int64(g))
	}
	close(stop)
	wg.Wait()
	t.Logf("%d swaps, %d packets during them, %d barriers", swaps, packets.Load(), r.d.RingStats().Barriers)
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d packets got no backend of a live ring; first: %v", n, firstBad.Load())
	}
	if packets.Load() < swaps {
		t.Errorf("only %d packets ran during %d swaps", packets.Load(), swaps)
	}
	// The blocks of the halves replaced by other sizes went back to the allocator: two
	// halves of the current size, at most two sizes' worth.
	if used := r.d.RingStats().UsedBlocks; used > 2*blocksFor(4099) {
		t.Errorf("%d ring blocks in use by one VIP", used)
	}
}

// runOnce runs the program once on in (safe from any goroutine).
func runOnce(p *ebpf.Program, in []byte) (uint32, []byte, error) {
	out := make([]byte, len(in)+256)
	opts := ebpf.RunOptions{Data: in, DataOut: out, Repeat: 1}
	ret, err := p.Run(&opts)
	return ret, opts.DataOut, err
}
