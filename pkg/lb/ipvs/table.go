package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	cipvs "github.com/cloudflare/ipvs"

	"github.com/l4lb/l4lb/pkg/lb"
)

// Stats are IPVS's own counters of a service or destination (ipvsadm --stats).
type Stats struct {
	Conns    uint64 `json:"conns"`
	InPkts   uint64 `json:"in_pkts"`
	OutPkts  uint64 `json:"out_pkts"`
	InBytes  uint64 `json:"in_bytes"`
	OutBytes uint64 `json:"out_bytes"`
}

// ServiceStatus is one of l4lb's virtual services as the kernel holds it: what
// `ipvsadm -Ln --stats` shows for it.
type ServiceStatus struct {
	Key       string       `json:"key"`
	Proto     string       `json:"proto"`
	Address   string       `json:"address"` // addr:port, IPv6 in brackets
	Scheduler string       `json:"scheduler"`
	Flags     []string     `json:"flags"`
	Missing   bool         `json:"missing,omitempty"` // l4lb created it, the kernel lost it
	Stats     Stats        `json:"stats"`
	Dests     []DestStatus `json:"destinations"`
}

// DestStatus is one real server of a service.
type DestStatus struct {
	Address       string `json:"address"` // addr:port
	Forward       string `json:"forward"` // Tunnel, Masq (ipvsadm's words)
	Weight        uint32 `json:"weight"`
	ActiveConns   uint32 `json:"active_conns"`
	InactiveConns uint32 `json:"inactive_conns"`
	// Leaving: no longer configured, kept with weight 0 until its connections end.
	Leaving bool  `json:"leaving,omitempty"`
	Stats   Stats `json:"stats"`
}

func stats(s cipvs.Stats) Stats {
	return Stats{Conns: s.Connections, InPkts: s.IncomingPackets, OutPkts: s.OutgoingPackets, InBytes: s.IncomingBytes, OutBytes: s.OutgoingBytes}
}

func hostPort(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}

func forwardName(f cipvs.ForwardType) string {
	switch f {
	case cipvs.Masquerade:
		return "Masq"
	case cipvs.Tunnel:
		return "Tunnel"
	case cipvs.DirectRoute:
		return "Route"
	case cipvs.Local:
		return "Local"
	}
	return f.String()
}

func flagNames(f cipvs.Flags) []string {
	var out []string
	if f&flagMHFallback != 0 {
		out = append(out, "mh-fallback")
	}
	if f&flagMHPort != 0 {
		out = append(out, "mh-port")
	}
	return out
}

// Table reads l4lb's virtual services (only those) with their destinations and IPVS's
// counters, sorted by VIP.
func (d *Dataplane) Table() ([]ServiceStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ks, err := d.kernelServices()
	if err != nil {
		return nil, err
	}
	var out []ServiceStatus
	for name, r := range d.state.Services {
		st := ServiceStatus{Key: name, Proto: r.Key.Proto.String(), Address: hostPort(r.Key.Addr, r.Key.Port)}
		s, ok := ks[r.Key]
		if !ok {
			st.Missing = true
			out = append(out, st)
			continue
		}
		st.Scheduler, st.Flags, st.Stats = s.Scheduler, flagNames(s.Flags), stats(s.Stats64)
		dests, err := d.c.Destinations(s.Service)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("list destinations of %s: %w", name, err)
		}
		listed := map[netip.Addr]bool{}
		for _, b := range r.Backends {
			listed[b.Addr.Unmap()] = true
		}
		slices.SortFunc(dests, func(a, b cipvs.DestinationExtended) int { return a.Address.Compare(b.Address) })
		for _, de := range dests {
			st.Dests = append(st.Dests, DestStatus{Address: hostPort(de.Address, de.Port), Forward: forwardName(de.FwdMethod),
				Weight: de.Weight, ActiveConns: de.ActiveConnections, InactiveConns: de.InactiveConnections,
				Leaving: !listed[de.Address], Stats: stats(de.Stats64)})
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b ServiceStatus) int {
		ka, kb := d.state.Services[a.Key].Key, d.state.Services[b.Key].Key
		if c := ka.Addr.Compare(kb.Addr); c != 0 {
			return c
		}
		if ka.Port != kb.Port {
			return int(ka.Port) - int(kb.Port)
		}
		return int(ka.Proto) - int(kb.Proto)
	})
	return out, nil
}

// Destinations returns the destinations of one of l4lb's services (tests, status).
func (d *Dataplane) Destinations(k lb.VIPKey) ([]DestStatus, error) {
	t, err := d.Table()
	if err != nil {
		return nil, err
	}
	k.Addr = k.Addr.Unmap()
	for _, s := range t {
		if s.Key == k.String() {
			return s.Dests, nil
		}
	}
	return nil, fmt.Errorf("vip %s: not one of l4lb's ipvs services", k)
}
