package nft

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

// benchVIP is VIP i (198.51.100.0/24 and 203.0.113.0/24 by port) with three backends.
func benchVIP(i int, w uint32) lb.VIP {
	k := lb.VIPKey{Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)}), Port: uint16(1000 + i/250), Proto: lb.ProtoTCP}
	v := lb.VIP{Key: k}
	for j := range 3 {
		v.Backends = append(v.Backends, lb.Backend{ID: uint32(j + 1), Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + j)}), Weight: 1})
	}
	v.Backends[0].Weight = w
	return v
}

// BenchmarkPrivilegedUpdate measures one VIP update (a weight change: a new ring swapped
// in) with n VIPs installed, for ring sizes 1021 and 65537. 1,000 VIPs of 65537 slots
// would take gigabytes of kernel memory, so the large ring is measured up to 100 VIPs.
func BenchmarkPrivilegedUpdate(b *testing.B) {
	testutil.RequireCommands(b, "ip")
	for _, c := range []struct {
		ring uint32
		vips []int
	}{{1021, []int{1, 100, 1000}}, {65537, []int{1, 10, 100}}} {
		for _, n := range c.vips {
			b.Run(fmt.Sprintf("ring=%d/vips=%d", c.ring, n), func(b *testing.B) {
				ns := testutil.NewNetNS(b, "nftbench")
				h, err := netns.GetFromName(ns.Name())
				if err != nil {
					b.Fatal(err)
				}
				defer h.Close()
				d, err := New(Options{RingSize: c.ring, NetNS: int(h)})
				if err != nil {
					b.Fatal(err)
				}
				for i := range n {
					if err := d.SetVIP(benchVIP(i, 1)); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				for i := range b.N {
					if err := d.SetVIP(benchVIP(n/2, uint32(2+i%2))); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
