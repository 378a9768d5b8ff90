package daemon

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/l4lb/l4lb/pkg/config"
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
			if !isDefault(r) || r.Gw == nil {
				continue
			}
			mac, err := neighbourMAC(r.LinkIndex, fam, r.Gw)
			if err != nil || mac != nil {
				return mac, err
			}
		}
	}
	return nil, nil
}

func isDefault(r netlink.Route) bool { return r.Dst == nil || r.Dst.IP.IsUnspecified() }

// neighbourMAC is the resolved MAC of ip on the link with index idx, or nil.
func neighbourMAC(idx, fam int, ip net.IP) (net.HardwareAddr, error) {
	neighs, err := netlink.NeighList(idx, fam)
	if err != nil {
		return nil, fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range neighs {
		if n.IP.Equal(ip) && len(n.HardwareAddr) == 6 && n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0 {
			return n.HardwareAddr, nil
		}
	}
	return nil, nil
}

// interfaceNextHops resolves, for each interface, the next hop of its own routes: the
// gateway of its default route (IPv4 first, then IPv6), else of any route with a gateway
// through it, as its neighbour entry has it. Interfaces whose next hop cannot be found
// are returned in missing, each with the reason.
func interfaceNextHops(ifaces []string) (hops map[string]net.HardwareAddr, missing map[string]string, err error) {
	hops, missing = map[string]net.HardwareAddr{}, map[string]string{}
	for _, name := range ifaces {
		l, err := netlink.LinkByName(name)
		if err != nil {
			missing[name] = fmt.Sprintf("no such interface: %v", err)
			continue
		}
		idx := l.Attrs().Index
		var gwSeen bool
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			routes, err := netlink.RouteListFiltered(fam, &netlink.Route{LinkIndex: idx}, netlink.RT_FILTER_OIF)
			if err != nil {
				return nil, nil, fmt.Errorf("list routes of %s: %w", name, err)
			}
			// Default routes first.
			slices.SortStableFunc(routes, func(a, b netlink.Route) int {
				switch da, db := isDefault(a), isDefault(b); {
				case da && !db:
					return -1
				case db && !da:
					return 1
				}
				return 0
			})
			for _, r := range routes {
				if r.Gw == nil {
					continue
				}
				gwSeen = true
				mac, err := neighbourMAC(idx, fam, r.Gw)
				if err != nil {
					return nil, nil, err
				}
				if mac != nil {
					hops[name] = mac
					break
				}
			}
			if hops[name] != nil {
				break
			}
		}
		if hops[name] == nil {
			if gwSeen {
				missing[name] = "its gateway's neighbour entry is not resolved"
			} else {
				missing[name] = "no route with a gateway through it"
			}
		}
	}
	return hops, missing, nil
}

// NextHopWarnings warns, for each configured interface, when its next hop's MAC cannot be
// found here (as `l4lb run` would look it up: its own routes' gateway in the neighbour
// table) and cfg sets no nexthop.mac, with an XDP data plane (xdp, or auto, which tries
// xdp first). Such an interface sends encapsulated packets to the default route's
// gateway, or back to the MAC they came from. It reads the routing tables and changes
// nothing; tables it cannot read are a warning too.
func NextHopWarnings(cfg *config.Config) []config.Problem {
	if cfg.NextHop.MAC != "" || (cfg.Dataplane != "xdp" && cfg.Dataplane != "auto") {
		return nil
	}
	_, missing, err := interfaceNextHops(cfg.Interfaces)
	if err != nil {
		return []config.Problem{{Field: "interfaces", Msg: fmt.Sprintf("next hops not checked: %v", err)}}
	}
	var out []config.Problem
	for _, ifc := range cfg.Interfaces {
		why, ok := missing[ifc]
		if !ok {
			continue
		}
		out = append(out, config.Problem{Field: "interfaces", Msg: fmt.Sprintf(
			"%s: no next hop mac found (%s): encapsulated packets leaving it go to the default route's gateway, "+
				"or back to the mac they came from; add a route with a gateway through it, or set nexthop.mac", ifc, why)})
	}
	return out
}

// watchRouting calls changed (coalesced, at most every 100 ms) whenever a route or a
// neighbour changes, until ctx is done, and every interval() as well: a backstop for
// notifications lost (a full netlink socket drops them) or not available (then it says
// so). interval is read again for each wait, so a reload's resolve_interval applies.
func watchRouting(ctx context.Context, interval func() time.Duration, warn func(string, ...any), changed func()) {
	done := make(chan struct{})
	defer close(done)
	routes := make(chan netlink.RouteUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	// Closing the subscriptions at stop ends their receives with an error: not worth a
	// warning.
	errs := func(err error) {
		if ctx.Err() == nil {
			warn("netlink subscription", "error", err)
		}
	}
	rerr := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{ErrorCallback: errs})
	nerr := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{ErrorCallback: errs})
	if rerr != nil || nerr != nil {
		warn("cannot watch routes and neighbours: polling the next hop instead", "route_error", rerr, "neigh_error", nerr, "interval", interval())
	}
	var settle <-chan time.Time
	poll := time.NewTimer(interval())
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-routes:
			if !ok {
				routes = nil
				warn("route subscription ended: polling the next hop instead", "interval", interval())
			}
			if settle == nil {
				settle = time.After(100 * time.Millisecond)
			}
		case _, ok := <-neighs:
			if !ok {
				neighs = nil
				warn("neighbour subscription ended: polling the next hop instead", "interval", interval())
			}
			if settle == nil {
				settle = time.After(100 * time.Millisecond)
			}
		case <-settle:
			settle = nil
			changed()
		case <-poll.C:
			changed()
			poll.Reset(interval())
		}
	}
}

func sameHops(a, b map[string]net.HardwareAddr) bool {
	return maps.EqualFunc(a, b, func(x, y net.HardwareAddr) bool { return x.String() == y.String() })
}
