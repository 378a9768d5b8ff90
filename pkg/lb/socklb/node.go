package socklb

import (
	"context"
	"errors"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// Node is the socket-only data plane (dataplane: socket) as the daemon drives it: the XDP
// data plane's maps, loaded but never attached to an interface, programmed by xdp.Node's
// own lb.Programmer (so health, drain and weights apply exactly as in XDP), and the
// socket LB programs attached to a cgroup instead of interfaces.
type Node struct {
	*xdp.Node
	x      *xdp.Dataplane
	s      *Dataplane
	cgroup string
	reason string
}

var _ lb.Dataplane = (*Node)(nil)

// NewNode wraps loaded XDP maps and a socket LB loaded over them; cgroup is where Attach
// attaches.
func NewNode(x *xdp.Dataplane, s *Dataplane, cgroup, reason string) *Node {
	return &Node{Node: xdp.NewNode(x, reason), x: x, s: s, cgroup: cgroup, reason: reason}
}

// Socket returns the socket LB (counters, sampled clients).
func (n *Node) Socket() *Dataplane { return n.s }

// Info implements lb.Dataplane.
func (n *Node) Info() lb.Info {
	return lb.Info{Mode: "socket", Reason: n.reason, MaxBackendID: xdp.MaxBackends - 1}
}

// SetForwarding implements lb.Dataplane: nothing is encapsulated, nothing to set.
func (n *Node) SetForwarding(lb.Forwarding) error { return nil }

// Attach implements lb.Dataplane: it attaches to the cgroup, not to interfaces (the
// configuration has none), and reports no interface.
func (n *Node) Attach(context.Context, []string) (map[string]string, error) {
	return map[string]string{}, n.s.Attach(n.cgroup)
}

// Detach implements lb.Dataplane.
func (n *Node) Detach(context.Context) error { return n.s.Detach() }

// Counters implements lb.Dataplane: no packet crosses this data plane, so there are no
// packet counters; the socket LB's own counters are read through Socket().
func (n *Node) Counters() (lb.Counters, error) {
	return lb.Counters{VIPs: map[lb.VIPKey]lb.TrafficCounters{}, Backends: map[uint32]lb.TrafficCounters{},
		Global: map[string]uint64{}}, nil
}

// Close implements lb.Dataplane.
func (n *Node) Close() error { return errors.Join(n.s.Close(), n.x.Close()) }

// Unpin implements lb.Dataplane.
func (n *Node) Unpin() error { return errors.Join(n.s.Unpin(), n.x.Unpin()) }
