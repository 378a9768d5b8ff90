package xdp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/l4lb/l4lb/pkg/lb"
)

// Node is the XDP data plane as the daemon and the controller drive it: lb.Dataplane over
// a loaded Dataplane.
type Node struct {
	d      *Dataplane
	reason string
	ifaces []string

	// deleting: backends whose delete waits out the grace period (Options.MemberGrace),
	// each with the token of its timer; SetVIP takes back the ones it lists.
	dmu      sync.Mutex
	deleting map[uint32]uint64
	token    uint64
}

var _ lb.Dataplane = (*Node)(nil)

// NewNode wraps a loaded data plane; reason says why XDP was chosen.
func NewNode(d *Dataplane, reason string) *Node { return &Node{d: d, reason: reason} }

// Dataplane returns the loaded program and maps (tests, benchmarks).
func (n *Node) Dataplane() *Dataplane { return n.d }

// Info implements lb.Dataplane.
func (n *Node) Info() lb.Info {
	return lb.Info{Mode: "xdp", Reason: n.reason, MaxBackendID: MaxBackends - 1}
}

// Programmed implements lb.Programmer: the vips map, whether each VIP's active ring
// half is set in ring_sel, and the backends map.
func (n *Node) Programmed() (lb.Programmed, error) {
	p := lb.Programmed{VIPs: map[lb.VIPKey]lb.ProgrammedVIP{}}
	n.d.mu.Lock()
	entries, err := n.d.vipEntries()
	n.d.mu.Unlock()
	if err != nil {
		return p, err
	}
	sels, err := n.d.ringSelectors()
	if err != nil {
		return p, err
	}
	for k, m := range entries {
		sel := sels[m.Id]
		p.VIPs[lb.VIPKey{Addr: addrFrom16(k.Addr, k.Family), Port: htons(k.Port), Proto: lb.Proto(k.Proto)}] =
			lb.ProgrammedVIP{ID: m.Id, Flags: lb.VIPFlags(m.Flags), Ready: sel.Half[sel.Active&1].Size != 0}
	}
	if p.Backends, err = n.d.Backends(); err != nil {
		return p, err
	}
	n.d.vc.setBackends(p.Backends)
	return p, nil
}

// PairCapacity is how many (VIP, backend) pairs vip_backends takes with room to spare
// (three quarters of its slots; past that a pair's two buckets are often both full). The
// map's size is fixed at load: more needs a restart (PairBucketsFor).
func (n *Node) PairCapacity() int {
	n.d.pairs.mu.Lock()
	defer n.d.pairs.mu.Unlock()
	return len(n.d.pairs.buckets) * int(pairWays) * 3 / 4
}

// SetVIP implements lb.Programmer. A backend it lists whose delete was waiting is kept.
func (n *Node) SetVIP(v lb.VIP) error {
	n.dmu.Lock()
	for _, b := range v.Backends {
		delete(n.deleting, b.ID)
	}
	n.dmu.Unlock()
	_, err := n.d.SetVIP(v)
	return err
}

// DeleteVIP implements lb.Programmer.
func (n *Node) DeleteVIP(k lb.VIPKey) error { return n.d.DeleteVIP(k) }

// DeleteBackend implements lb.Programmer: the backend is deleted one grace period after
// the pass that no longer lists it (Options.MemberGrace), so that a connection whose
// first packet reached it just before its VIP's ring changed completes; its later
// packets follow the conntrack entry until then. Its id is quarantined by the controller
// meanwhile, so no other address takes it; a SetVIP that lists it again keeps it.
func (n *Node) DeleteBackend(id uint32) error {
	grace := n.d.opts.MemberGrace
	if grace <= 0 {
		return n.d.DeleteBackend(id)
	}
	if id == 0 || id >= MaxBackends {
		return fmt.Errorf("backend id %d: must be in 1..%d", id, MaxBackends-1)
	}
	n.dmu.Lock()
	defer n.dmu.Unlock()
	if _, ok := n.deleting[id]; ok {
		return nil // waiting already: a later pass does not push it back
	}
	if n.deleting == nil {
		n.deleting = map[uint32]uint64{}
	}
	n.token++
	tok := n.token
	n.deleting[id] = tok
	time.AfterFunc(grace, func() {
		n.dmu.Lock()
		defer n.dmu.Unlock()
		if n.deleting[id] != tok {
			return // listed again meanwhile
		}
		delete(n.deleting, id)
		if n.d.isClosed() {
			return
		}
		if err := n.d.DeleteBackend(id); err != nil {
			n.d.log.Warn("delete a backend no VIP lists", "backend_id", id, "error", err)
		}
	})
	return nil
}

// SetForwarding implements lb.Dataplane.
func (n *Node) SetForwarding(f lb.Forwarding) error {
	hops := map[int]net.HardwareAddr{}
	for name, mac := range f.NextHops {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return fmt.Errorf("next hop of %s: %w", name, err)
		}
		hops[ifc.Index] = mac
	}
	if err := n.d.SetNextHops(hops); err != nil {
		return err
	}
	return n.d.SetConfig(Config{NextHopMAC: f.NextHopMAC, Source4: f.Source4, Source6: f.Source6})
}

// Attach implements lb.Dataplane: each interface through a pinned bpf_link, adopting the
// link a previous run left.
func (n *Node) Attach(_ context.Context, ifaces []string) (map[string]string, error) {
	modes := map[string]string{}
	for _, ifc := range ifaces {
		mode, err := n.d.Attach(ifc)
		if err != nil {
			return modes, err
		}
		modes[ifc] = mode
		n.ifaces = append(n.ifaces, ifc)
	}
	return modes, nil
}

// Detach implements lb.Dataplane.
func (n *Node) Detach(context.Context) error {
	var errs []error
	for _, ifc := range n.ifaces {
		errs = append(errs, n.d.Detach(ifc))
	}
	n.ifaces = nil
	return errors.Join(errs...)
}

// Counters implements lb.Dataplane: per VIP, per (VIP, backend) and node-wide per backend
// (the sum over its VIPs). It reads the maps only: the cache SetVIP relies on is the
// controller pass's to refresh (Programmed), never a reader's.
func (n *Node) Counters() (lb.Counters, error) {
	c := lb.Counters{VIPs: map[lb.VIPKey]lb.TrafficCounters{}, Backends: map[uint32]lb.TrafficCounters{},
		VIPBackends: map[lb.VIPKey]map[uint32]lb.TrafficCounters{}}
	vips, err := n.d.VIPs()
	if err != nil {
		return c, err
	}
	for k, id := range vips {
		vc, err := n.d.VIPCounters(id)
		if err != nil {
			return c, err
		}
		c.VIPs[k] = lb.TrafficCounters(vc)
		per := map[uint32]lb.TrafficCounters{}
		for _, be := range n.d.Members(id) {
			pc, ok, err := n.d.PairCounters(id, be)
			if err != nil {
				return c, err
			}
			if !ok {
				continue
			}
			per[be] = lb.TrafficCounters(pc)
			t := c.Backends[be]
			t.Packets += pc.Packets
			t.Bytes += pc.Bytes
			c.Backends[be] = t
		}
		c.VIPBackends[k] = per
	}
	if c.Global, err = n.d.Stats(); err != nil {
		return c, err
	}
	return c, nil
}

// Close implements lb.Dataplane.
func (n *Node) Close() error { return n.d.Close() }

// Unpin implements lb.Dataplane.
func (n *Node) Unpin() error { return n.d.Unpin() }

// DetachPinnedLinks detaches and unpins the links pinned in dir (its entries) whose names
// start with prefix, without loading anything. It returns the names it removed and what
// failed.
func DetachPinnedLinks(dir string, entries []os.DirEntry, prefix string) ([]string, []error) {
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		path := filepath.Join(dir, name)
		l, err := link.LoadPinnedLink(path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", path, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", path, err))
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", path, err))
		}
		removed = append(removed, name)
	}
	return removed, errs
}

// RemovePinned detaches the XDP links pinned in dir and removes the maps pinned there,
// without loading anything: it works whatever sizes the pinned maps were made with (a
// changed ring_size or conntrack_size is when operators need it). Files that are not
// l4lb's are left alone and named in the error. It returns what it removed.
func RemovePinned(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	spec, err := loadXdplb()
	if err != nil {
		return nil, fmt.Errorf("load xdp_lb spec: %w", err)
	}
	ours := map[string]bool{"lb_meta": true}
	for name, m := range spec.Maps {
		if m.Pinning == ebpf.PinByName {
			ours[name] = true
		}
	}
	// Links first: once they are gone the program stops forwarding, then the maps go.
	removed, errs := DetachPinnedLinks(dir, entries, "link_")
	var foreign []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "link_") {
			continue
		}
		if !ours[name] && !strings.HasPrefix(name, migratingPrefix) {
			foreign = append(foreign, name)
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			continue
		}
		removed = append(removed, name)
	}
	if len(foreign) > 0 {
		errs = append(errs, fmt.Errorf("left in %s, not l4lb's: %s", dir, strings.Join(foreign, ", ")))
	} else if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return removed, errors.Join(errs...)
}
