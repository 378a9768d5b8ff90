package xdp

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/l4lb/l4lb/pkg/lb"
)

// SetVIP runs concurrently for different VIPs (the controller writes up to 32 at once):
// every new VIP must get its own id, and its own ring must end up under that id.
func TestPrivilegedConcurrentSetVIP(t *testing.T) {
	r := newRig(t, Options{})
	const n = 40
	vips := make([]lb.VIP, n)
	for i := range vips {
		vips[i] = lb.VIP{
			Key:      lb.VIPKey{Addr: mustAddr("203.0.113.10"), Port: uint16(1000 + i), Proto: lb.ProtoTCP},
			Backends: backends(uint32(2*i+1), fmt.Sprintf("198.51.100.%d", 2*i+1), fmt.Sprintf("198.51.100.%d", 2*i+2)),
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, v := range vips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.d.SetVIP(v)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("vip %d: %v", i, err)
		}
	}
	ids, err := r.d.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	if len(ids) != n || len(seen) != n {
		t.Fatalf("%d vips with %d distinct ids, want %d and %d", len(ids), len(seen), n, n)
	}
	// A SYN to each VIP goes to one of that VIP's own backends, as its ring says.
	for _, v := range vips {
		table, err := lb.MaglevTable(v.Backends, r.d.Options().RingSize)
		if err != nil {
			t.Fatal(err)
		}
		p := pkt{src: "198.51.100.200", dst: "203.0.113.10", proto: lb.ProtoTCP, sport: 40000, dport: v.Key.Port, flags: "S"}
		verdict, out := r.run(p.build(t))
		if verdict != xdpTx {
			t.Fatalf("%s: verdict %d, want XDP_TX", v.Key, verdict)
		}
		want := table[RingSlot(r.d.Options().SlotMapping, FlowHash(p.flow(), v.Flags), r.d.Options().RingSize)]
		var wantAddr netip.Addr
		for _, b := range v.Backends {
			if b.ID == want {
				wantAddr = b.Addr
			}
		}
		got, _ := netip.AddrFromSlice(out[14+16 : 14+20])
		if got != wantAddr {
			t.Errorf("%s: encapsulated to %s, want %s (its ring's pick)", v.Key, got, wantAddr)
		}
	}
}
