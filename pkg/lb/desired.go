package lb

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Override is an operator's change on top of the configuration (admin API).
type Override struct {
	Drain  bool    `json:"drain,omitempty"`
	Weight *uint32 `json:"weight,omitempty"`
}

// Overrides by backend.
type Overrides map[BackendKey]Override

// Clone returns a copy that shares nothing mutable with o.
func (o Overrides) Clone() Overrides {
	out := make(Overrides, len(o))
	for k, v := range o {
		if v.Weight != nil {
			w := *v.Weight
			v.Weight = &w
		}
		out[k] = v
	}
	return out
}

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

// Desired computes the desired state from the spec, the operators' overrides and the
// backends' health (missing from health = healthy). ids gives every backend address its
// stable id; it must cover every address in the spec (AssignIDs). Pure: no I/O.
//
// A backend's effective weight is its configured weight, replaced by an override weight
// if set, and 0 when drained by an override or unhealthy: weight 0 keeps established
// flows and gives no new ones.
func Desired(spec Spec, ov Overrides, health map[BackendKey]bool, ids map[netip.Addr]uint32) (State, error) {
	var st State
	for _, sv := range spec.Services {
		vs := VIPState{Name: sv.Name, Communities: slices.Clone(sv.Communities), MED: sv.MED,
			VIP: VIP{Key: VIPKey{Addr: sv.Key.Addr.Unmap(), Port: sv.Key.Port, Proto: sv.Key.Proto}, Flags: sv.Flags, RingSize: sv.RingSize}}
		for _, b := range sv.Backends {
			ba := b.Addr.Unmap()
			id, ok := ids[ba]
			if !ok {
				return State{}, fmt.Errorf("vip %s: backend %s has no id", sv.Name, ba)
			}
			bs := BackendState{ConfigWeight: b.Weight, Healthy: true}
			k := BackendKey{VIP: sv.Name, Backend: ba}
			if up, known := health[k]; known {
				bs.Healthy = up
			}
			eff := b.Weight
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

// AssignIDs gives every address in want a backend id in 1..maxID. Addresses in have (what
// the data plane holds) keep their ids, so conntrack entries stay valid across reloads and
// restarts. New addresses get the lowest ids that have does not hold: an id that belongs
// to a backend being removed in this pass is never handed out in the same pass, because
// that backend's entry is deleted only after the new rings are in place, and deleting it
// would then delete the new backend (a black hole for its share of new flows).
func AssignIDs(have map[netip.Addr]uint32, want []netip.Addr, maxID uint32) (map[netip.Addr]uint32, error) {
	return AssignIDsAvoiding(have, want, maxID, nil)
}

// FreedID is a backend id deleted recently: the address it belonged to and when.
type FreedID struct {
	Addr netip.Addr
	At   time.Time
}

// AssignIDsAvoiding is AssignIDs that also gives no new address an id in quarantine
// (freed recently: conntrack entries or a ring read in flight may still name it), except
// the address the id was freed from, which gets it back (its entries are its own), and
// except when every other id is taken; then the quarantined ids go, the longest freed
// first.
func AssignIDsAvoiding(have map[netip.Addr]uint32, want []netip.Addr, maxID uint32, quarantine map[uint32]FreedID) (map[netip.Addr]uint32, error) {
	out := make(map[netip.Addr]uint32, len(want))
	held := make(map[uint32]bool, len(have))
	for _, id := range have {
		held[id] = true
	}
	used := map[uint32]bool{}
	var fresh []netip.Addr
	for _, a := range want {
		if _, dup := out[a]; dup {
			continue
		}
		if id, ok := have[a]; ok && id != 0 && id <= maxID && !used[id] {
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
	// An address removed and added again within the quarantine gets its id back.
	back := map[netip.Addr]uint32{}
	for id, f := range quarantine {
		if id == 0 || id > maxID || held[id] {
			continue
		}
		if prev, ok := back[f.Addr]; !ok || quarantine[prev].At.Before(f.At) {
			back[f.Addr] = id // the most recent id of that address
		}
	}
	rest := fresh[:0]
	for _, a := range fresh {
		if id, ok := back[a]; ok && !used[id] {
			out[a] = id
			used[id] = true
			continue
		}
		rest = append(rest, a)
	}
	// Quarantined ids by age, for when no other id is free.
	aged := make([]uint32, 0, len(quarantine))
	for id := range quarantine {
		aged = append(aged, id)
	}
	slices.SortFunc(aged, func(x, y uint32) int {
		if c := quarantine[x].At.Compare(quarantine[y].At); c != 0 {
			return c
		}
		return int(x) - int(y)
	})
	next := uint32(1)
	for _, a := range rest {
		inQuarantine := func(id uint32) bool { _, q := quarantine[id]; return q }
		for next <= maxID && (used[next] || held[next] || inQuarantine(next)) {
			next++
		}
		id := next
		if next > maxID {
			id = 0
			for _, q := range aged {
				if q != 0 && q <= maxID && !used[q] && !held[q] {
					id = q
					break
				}
			}
			if id == 0 {
				return nil, fmt.Errorf("%d backends wanted while %d are still programmed: more than %d ids: %w",
					len(out), len(have), maxID, ErrInvalid)
			}
		}
		out[a] = id
		used[id] = true
	}
	return out, nil
}
