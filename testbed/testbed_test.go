package testbed

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/l4lb/l4lb/pkg/config"
)

// The committed LB configs must match the addresses the testbed builds.
func TestLBConfigsMatchTheTopology(t *testing.T) {
	for _, lb := range LBNodes {
		cfg, err := config.Load(filepath.Join("..", "conf", "testbed", lb+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cfg.Interfaces, []string{"l0"}) {
			t.Errorf("%s: interfaces %v, want [l0]", lb, cfg.Interfaces)
		}
		if !cfg.BGP.Enabled || cfg.BGP.RouterID != LBAddr4(lb) || cfg.BGP.LocalASN != LBASN {
			t.Errorf("%s: bgp enabled %v, router id %s, asn %d; want true, %s, %d", lb, cfg.BGP.Enabled, cfg.BGP.RouterID, cfg.BGP.LocalASN, LBAddr4(lb), LBASN)
		}
		// The backends' decap accepts tunnels from these prefixes only (LBSources).
		if cfg.Encap.Source4 != EncapSource4(lb) || cfg.Encap.Source6 != EncapSource6(lb) {
			t.Errorf("%s: encap sources %s, %s; want %s, %s", lb, cfg.Encap.Source4, cfg.Encap.Source6, EncapSource4(lb), EncapSource6(lb))
		}
		var peers []string
		for _, p := range cfg.BGP.Peers {
			peers = append(peers, fmt.Sprintf("%s/%d", p.Address, p.ASN))
		}
		if want := []string{fmt.Sprintf("%s/%d", RouterLBAddr4(lb), RouterASN), fmt.Sprintf("%s/%d", RouterLBAddr6(lb), RouterASN)}; !slices.Equal(peers, want) {
			t.Errorf("%s: peers %v, want %v", lb, peers, want)
		}
		for _, v := range cfg.VIPs {
			want4 := v.Address == VIP4
			if !want4 && v.Address != VIP6 {
				t.Errorf("%s: vip %s has address %s, want %s or %s", lb, v.Name, v.Address, VIP4, VIP6)
			}
			var got, want []string
			for _, be := range v.Backends {
				got = append(got, be.Address)
			}
			for _, be := range BackendNodes {
				if want4 {
					want = append(want, BackendAddr4(be))
				} else {
					want = append(want, BackendAddr6(be))
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: vip %s backends %v, want %v", lb, v.Name, got, want)
			}
		}
	}
}
