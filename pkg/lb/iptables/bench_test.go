package iptables

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

func benchVIP(i int, w uint32) lb.VIP {
	k := lb.VIPKey{Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(i % 250)}), Port: uint16(1000 + i/250), Proto: lb.ProtoTCP}
	v := lb.VIP{Key: k}
	for j := range 3 {
		v.Backends = append(v.Backends, lb.Backend{ID: uint32(j + 1), Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(10 + j)}), Weight: 1})
	}
	v.Backends[0].Weight = w
	return v
}

// BenchmarkPrivilegedUpdate measures one VIP update (a weight change) with n VIPs
// installed: iptables-restore rewrites every L4LB chain, so it grows with n.
func BenchmarkPrivilegedUpdate(b *testing.B) {
	testutil.RequireCommands(b, "ip", "iptables-restore")
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("vips=%d", n), func(b *testing.B) {
			ns := testutil.NewNetNS(b, "iptbench")
			d, err := New(Options{Exec: []string{"ip", "netns", "exec", ns.Name()}})
			if err != nil {
				b.Fatal(err)
			}
			// Install n VIPs in one write.
			d.mu.Lock()
			for i := range n {
				v := benchVIP(i, 1)
				d.vips[v.Key] = vipEntry{id: uint32(i), vip: v}
				for _, be := range v.Backends {
					d.backends[be.ID] = be.Addr
				}
			}
			err = d.apply()
			d.mu.Unlock()
			if err != nil {
				b.Fatal(err)
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
