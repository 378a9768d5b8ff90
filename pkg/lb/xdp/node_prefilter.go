package xdp

import (
	"net/netip"

	"github.com/l4lb/l4lb/pkg/lb"
)

var _ lb.Prefilter = (*Node)(nil)

// DenyAdd implements lb.Prefilter.
func (n *Node) DenyAdd(p []netip.Prefix) error { return n.d.DenyAdd(p) }

// DenyDelete implements lb.Prefilter.
func (n *Node) DenyDelete(p []netip.Prefix) error { return n.d.DenyDelete(p) }

// DenyList implements lb.Prefilter.
func (n *Node) DenyList() ([]lb.DenyEntry, error) {
	list, err := n.d.DenyList()
	if err != nil {
		return nil, err
	}
	out := make([]lb.DenyEntry, len(list))
	for i, e := range list {
		out[i] = lb.DenyEntry{Prefix: e.Prefix, Drops: e.Drops}
	}
	return out, nil
}

// SetPolicy implements lb.Prefilter.
func (n *Node) SetPolicy(k lb.VIPKey, p lb.Policy) error {
	return n.d.SetPolicy(k, Policy{Allow: append([]netip.Prefix(nil), p.Allow...), GuardRate: p.GuardRate, GuardDropRate: p.GuardDropRate})
}

// PolicyCounters implements lb.Prefilter.
func (n *Node) PolicyCounters() (map[lb.VIPKey]lb.PolicyCounters, error) {
	vips, err := n.d.VIPs()
	if err != nil {
		return nil, err
	}
	out := make(map[lb.VIPKey]lb.PolicyCounters, len(vips))
	for k, id := range vips {
		c, err := n.d.GuardCounters(id)
		if err != nil {
			return nil, err
		}
		out[k] = lb.PolicyCounters{Untracked: c.Untracked, Dropped: c.Dropped, Denied: c.Denied}
	}
	return out, nil
}
