package lb

import "net/netip"

// Prefilter is an optional part of a data plane: a source-prefix deny list checked before
// any load-balancing work, per-VIP allow lists and the per-VIP new-flow guard. XDP
// implements it; the daemon type-asserts it and refuses prefilter settings on a data
// plane without it.
type Prefilter interface {
	// DenyAdd adds prefixes; listed ones keep their counters. A bad prefix changes nothing.
	DenyAdd([]netip.Prefix) error
	// DenyDelete removes prefixes; unlisted ones are ignored.
	DenyDelete([]netip.Prefix) error
	// DenyList returns the list with each prefix's drops.
	DenyList() ([]DenyEntry, error)
	// SetPolicy sets a VIP's allow list and guard; it applies whenever the VIP is
	// programmed, so it may come before the VIP.
	SetPolicy(VIPKey, Policy) error
	// PolicyCounters returns the guard and allow-list counters of the programmed VIPs.
	PolicyCounters() (map[VIPKey]PolicyCounters, error)
}

// DenyEntry is one deny-list prefix and the packets it dropped.
type DenyEntry struct {
	Prefix netip.Prefix `json:"prefix"`
	Drops  uint64       `json:"drops"`
}

// Policy is the prefilter's setting for one VIP.
type Policy struct {
	// Allow: when not empty, only sources inside these prefixes reach the VIP.
	Allow []netip.Prefix
	// GuardRate: new flows per second per CPU above which no conntrack entry is written
	// for new flows (0: off). GuardDropRate: above which new flows are dropped (0: off).
	GuardRate, GuardDropRate uint32
}

// PolicyCounters are one VIP's prefilter counters.
type PolicyCounters struct {
	Untracked uint64 `json:"untracked"` // new flows forwarded without a conntrack entry
	Dropped   uint64 `json:"dropped"`   // new flows dropped above the guard's drop rate
	Denied    uint64 `json:"denied"`    // packets from sources outside the allow list
}
