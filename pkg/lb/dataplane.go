package lb

import (
	"context"
	"net"
	"net/netip"
)

// Programmer is the part of a data plane the controller writes to. Every data plane
// implements it: XDP (maps and Maglev rings), and the kernel NAT fallbacks (nftables,
// iptables, IPVS), which map the same calls onto their rules and services.
//
// Backend ids are the control plane's: stable per address across reloads and restarts.
// XDP's conntrack stores them; a data plane without ids of its own may use them to name
// its elements, or ignore them.
type Programmer interface {
	// Programmed reads back what the data plane holds now, so a pass can tell what it has
	// to write and a restarted daemon keeps the ids its predecessor gave out.
	Programmed() (Programmed, error)
	// SetVIP programs a VIP whole: its backends first, then its backend choice (ring)
	// swapped in whole, then the VIP entry, so no packet sees a half-written VIP. Backends
	// with weight 0 stay (their established flows continue) but get no new flows. The
	// controller calls it concurrently for different VIPs, never for the same VIP.
	SetVIP(VIP) error
	// DeleteVIP removes the VIP entry first, then its backend choice.
	DeleteVIP(VIPKey) error
	// DeleteBackend removes a backend that no VIP lists any more; flows still pinned to it
	// are re-hashed. The controller calls it only after the rings no longer name the id.
	DeleteBackend(id uint32) error
}

// Programmed is what a data plane holds.
type Programmed struct {
	VIPs     map[VIPKey]ProgrammedVIP
	Backends map[uint32]netip.Addr
}

// ProgrammedVIP is one VIP as a data plane holds it.
type ProgrammedVIP struct {
	ID    uint32 // the data plane's index of the VIP (counters); 0 is valid
	Flags VIPFlags
	// Ready: the VIP's backend choice (ring, rules) is present, so new flows are served.
	Ready bool
}

// InSync reports whether p holds exactly want: the same VIPs with their flags and rings,
// and exactly the backends the VIPs list, under their ids. It does not re-read ring
// contents (65537 slots per VIP); those are written whole by SetVIP and only by it.
func (p Programmed) InSync(want State) bool {
	if len(p.VIPs) != len(want.VIPs) {
		return false
	}
	ids := map[uint32]netip.Addr{}
	for _, v := range want.VIPs {
		pv, ok := p.VIPs[v.VIP.Key]
		if !ok || !pv.Ready || pv.Flags != v.VIP.Flags {
			return false
		}
		for _, b := range v.VIP.Backends {
			ids[b.ID] = b.Addr
		}
	}
	if len(ids) != len(p.Backends) {
		return false
	}
	for id, a := range ids {
		if p.Backends[id] != a {
			return false
		}
	}
	return true
}

// Info says which data plane runs and why it was chosen.
type Info struct {
	// Mode: xdp, nftables, iptables, ipvs, socket.
	Mode string
	// Reason the mode was chosen (configured, or what auto-detection found).
	Reason string
	// MaxBackendID is the largest backend id the data plane can hold.
	MaxBackendID uint32
}

// Forwarding holds the node's run-time forwarding settings. Data planes that encapsulate
// (XDP) use them; NAT data planes ignore what does not apply to them.
type Forwarding struct {
	// NextHopMAC is the destination MAC of encapsulated packets; nil: back to the sender.
	NextHopMAC net.HardwareAddr
	// NextHops are the next hops of packets leaving by each interface (by name), from its
	// own routes; an interface without one uses NextHopMAC.
	NextHops map[string]net.HardwareAddr
	// Source4 and Source6 are the prefixes outer source addresses are taken from.
	Source4, Source6 netip.Prefix
}

// Counters are what a data plane counted, read at once.
type Counters struct {
	// VIPs by key and Backends by id: packets and bytes as the data plane counts them.
	// Backends are node-wide: an address behind several VIPs counts its packets of all.
	VIPs     map[VIPKey]TrafficCounters
	Backends map[uint32]TrafficCounters
	// VIPBackends are each backend's counters under one VIP (VIP key, then backend id),
	// from data planes that count per VIP and backend (XDP, IPVS); nil from the others.
	VIPBackends map[VIPKey]map[uint32]TrafficCounters
	// Global named counters (forwarded, drop reasons, conntrack outcomes, ...).
	Global map[string]uint64
}

// TrafficCounters are one VIP's or backend's counters summed over CPUs.
type TrafficCounters struct {
	Packets, Bytes, NewFlows uint64
}

// Dataplane is a whole data plane as the daemon drives it, without knowing which one it
// is: the controller programs it through Programmer; the daemon attaches it, reads its
// counters and cleans it up.
type Dataplane interface {
	Programmer
	Info() Info
	// SetForwarding applies the run-time forwarding settings.
	SetForwarding(Forwarding) error
	// Attach starts forwarding on the given interfaces, adopting what a previous run left
	// (forwarding never stops across a restart). It returns each interface's mode.
	Attach(ctx context.Context, ifaces []string) (map[string]string, error)
	// Detach stops forwarding on every interface Attach attached.
	Detach(ctx context.Context) error
	Counters() (Counters, error)
	// Close releases this process's handles; what is pinned keeps forwarding.
	Close() error
	// Unpin removes what a stop would otherwise keep (after Detach): the node forgets
	// its state.
	Unpin() error
}
