package lb

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/l4lb/l4lb/pkg/config"
)

// BackendKey names one backend of one VIP (by the VIP's configured name).
type BackendKey struct {
	VIP     string
	Backend netip.Addr
}

func (k BackendKey) String() string { return k.VIP + "/" + k.Backend.String() }

// Override is an operator's change on top of the configuration (admin API).
type Override struct {
	Drain  bool    `json:"drain,omitempty"`
	Weight *uint32 `json:"weight,omitempty"`
}

// Overrides by backend.
type Overrides map[BackendKey]Override

// BackendState is a backend as the controller wants it, with why it has its weight.
type BackendState struct {
	Backend
	ConfigWeight uint32
	Healthy      bool
	Drained      bool // by an override
}

// VIPState is one VIP as the controller wants it.
type VIPState struct {
	Name     string
	VIP      VIP
	Backends []BackendState
	// Up is true while at least one backend is healthy and not drained: the VIP can take
	// new flows (and, with BGP, is announced).
	Up          bool
	Communities []string
	MED         uint32
}

// State is the whole desired state.
type State struct {
	VIPs []VIPState
}

// Desired computes the desired state from the configuration, the operators' overrides and
// the backends' health (missing from health = healthy). ids gives every backend address
// its stable id; it must cover every address in cfg (AssignIDs). Pure: no I/O.
//
// A backend's effective weight is its configured weight (default 1), replaced by an
// override weight if set, and 0 when drained by an override or unhealthy: weight 0 keeps
// established flows and gives no new ones.
func Desired(cfg *config.Config, ov Overrides, health map[BackendKey]bool, ids map[netip.Addr]uint32) (State, error) {
	var st State
	for _, v := range cfg.VIPs {
		addr, err := netip.ParseAddr(v.Address)
		if err != nil {
			return State{}, fmt.Errorf("vip %s: %w", v.Name, err)
		}
		proto, err := ParseProto(v.Protocol)
		if err != nil {
			return State{}, fmt.Errorf("vip %s: %w", v.Name, err)
		}
		vs := VIPState{Name: v.Name, Communities: v.Communities, MED: v.MED,
			VIP: VIP{Key: VIPKey{Addr: addr.Unmap(), Port: uint16(v.Port), Proto: proto}}}
		if v.HashNoSourcePort {
			vs.VIP.Flags |= FlagHashNoSourcePort
		}
		for _, b := range v.Backends {
			ba, err := netip.ParseAddr(b.Address)
			if err != nil {
				return State{}, fmt.Errorf("vip %s: backend: %w", v.Name, err)
			}
			ba = ba.Unmap()
			id, ok := ids[ba]
			if !ok {
				return State{}, fmt.Errorf("vip %s: backend %s has no id", v.Name, ba)
			}
			w := uint32(config.DefaultWeight)
			if b.Weight != nil {
				w = uint32(*b.Weight)
			}
			bs := BackendState{ConfigWeight: w, Healthy: true}
			k := BackendKey{VIP: v.Name, Backend: ba}
			if up, known := health[k]; known {
				bs.Healthy = up
			}
			eff := w
			if o, ok := ov[k]; ok {
				if o.Weight != nil {
					eff = *o.Weight
				}
				bs.Drained = o.Drain
			}
			if bs.Drained || !bs.Healthy {
				eff = 0
			}
			bs.Backend = Backend{ID: id, Addr: ba, Weight: eff}
			vs.Backends = append(vs.Backends, bs)
			vs.VIP.Backends = append(vs.VIP.Backends, bs.Backend)
			if eff > 0 {
				vs.Up = true
			}
		}
		st.VIPs = append(st.VIPs, vs)
	}
	slices.SortFunc(st.VIPs, func(a, b VIPState) int { return strings.Compare(a.Name, b.Name) })
	return st, nil
}

// AssignIDs gives every address in want a backend id, keeping the ids in have (what the
// data plane holds, so conntrack entries stay valid across restarts) and giving new
// addresses the lowest free ids. Addresses in have but not in want keep no id.
func AssignIDs(have map[netip.Addr]uint32, want []netip.Addr, maxID uint32) (map[netip.Addr]uint32, error) {
	out := make(map[netip.Addr]uint32, len(want))
	used := map[uint32]bool{}
	var fresh []netip.Addr
	for _, a := range want {
		if _, dup := out[a]; dup {
			continue
		}
		if id, ok := have[a]; ok && id != 0 && !used[id] {
			out[a] = id
			used[id] = true
			continue
		}
		out[a] = 0
		fresh = append(fresh, a)
	}
	// Deterministic: new addresses in address order.
	slices.SortFunc(fresh, func(a, b netip.Addr) int { return a.Compare(b) })
	fresh = slices.Compact(fresh)
	next := uint32(1)
	for _, a := range fresh {
		for next <= maxID && used[next] {
			next++
		}
		if next > maxID {
			return nil, fmt.Errorf("more than %d backends: %w", maxID, ErrInvalid)
		}
		out[a] = next
		used[next] = true
	}
	return out, nil
}

// ConfigBackends lists every backend address in cfg.
func ConfigBackends(cfg *config.Config) []netip.Addr {
	var out []netip.Addr
	for _, v := range cfg.VIPs {
		for _, b := range v.Backends {
			if a, err := netip.ParseAddr(b.Address); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return cmp.Compare(a.String(), b.String()) })
	return slices.Compact(out)
}
