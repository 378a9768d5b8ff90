package daemon

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// gatewayMAC resolves the MAC of the default route's gateway from the neighbour table
// (IPv4 first, then IPv6). It returns nil when there is no default route or the gateway's
// neighbour entry is not resolved yet.
func gatewayMAC() (net.HardwareAddr, error) {
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteList(nil, fam)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
				continue
			}
			if r.Gw == nil {
				continue
			}
			neighs, err := netlink.NeighList(r.LinkIndex, fam)
			if err != nil {
				return nil, fmt.Errorf("list neighbours: %w", err)
			}
			for _, n := range neighs {
				if n.IP.Equal(r.Gw) && len(n.HardwareAddr) == 6 && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
					return n.HardwareAddr, nil
				}
			}
		}
	}
	return nil, nil
}
