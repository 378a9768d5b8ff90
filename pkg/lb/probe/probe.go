// Package probe loads the tc egress program that sends health probes along the data path
// (bpf/probe_tc.c): a probe socket marked with Mark(id) connects to the VIP, and its
// packets leave encapsulated to the backend SetTarget(id, ...) named, exactly as the XDP
// program forwards the VIP's traffic (the encap source prefixes are the XDP data plane's
// lb_cfg map).
package probe

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/bpfobj"
	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// backendExists is BACKEND_F_EXISTS.
const backendExists = limits.FlagBackendExists

// DefaultMark is the probe marks' high bits: a probe with id n carries DefaultMark | n. Other uses of SO_MARK / fwmark on the node must stay clear of
// 0x4c340000-0x4c34ffff.
const DefaultMark uint32 = 0x4c340000

// idBits is how many low bits of the mark carry the probe id (PROBE_ID_BITS).
const idBits = 16

// MaxID is the largest probe id.
const MaxID = 1<<idBits - 1

// filterName names the tc filter, so that one left by a daemon that died is found and
// replaced.
const filterName = "l4lb_probe"

// filterPrio is the filter's priority on egress.
const filterPrio = 0xc534

// Options are fixed for the life of a loaded program.
type Options struct {
	// Shared are the XDP data plane's maps (xdp.Dataplane.Shared): lb_cfg.
	Shared xdp.Shared
	// Mark is the probe marks' high bits; default DefaultMark. Its low 16 bits must be 0.
	Mark   uint32
	Logger *slog.Logger
}

// Encap is the loaded program and where it is attached.
type Encap struct {
	opts Options
	log  *slog.Logger
	objs probetcObjects

	mu       sync.Mutex
	attached map[int]string // ifindex -> name
}

// Load loads the program over the shared maps; it attaches nowhere yet.
func Load(opts Options) (*Encap, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Mark == 0 {
		opts.Mark = DefaultMark
	}
	if opts.Mark&(1<<idBits-1) != 0 {
		return nil, fmt.Errorf("probe mark %#x: the low %d bits carry the probe id and must be 0", opts.Mark, idBits)
	}
	spec, err := loadProbetc()
	if err != nil {
		return nil, fmt.Errorf("load probe_tc spec: %w", err)
	}
	if err := spec.Variables["probe_mark"].Set(opts.Mark); err != nil {
		return nil, fmt.Errorf("set probe_mark: %w", err)
	}
	m, ok := opts.Shared.Maps["lb_cfg"]
	if !ok {
		return nil, fmt.Errorf("load probe_tc: the xdp data plane shares no map lb_cfg")
	}
	repl := map[string]*ebpf.Map{"lb_cfg": m}
	e := &Encap{opts: opts, log: opts.Logger.With("component", "probe"), attached: map[int]string{}}
	if err := spec.LoadAndAssign(&e.objs, &ebpf.CollectionOptions{MapReplacements: repl}); err != nil {
		return nil, fmt.Errorf("load probe_tc: %w", err)
	}
	return e, nil
}

// Mark is the SO_MARK a probe with id carries.
func (e *Encap) Mark(id uint32) uint32 { return e.opts.Mark | id }

// SetTarget makes probes with id leave encapsulated to backend addr.
func (e *Encap) SetTarget(id uint32, addr netip.Addr) error {
	if id == 0 || id > MaxID {
		return fmt.Errorf("probe id %d: want 1..%d", id, MaxID)
	}
	var v probetcBackend
	a, fam := bpfobj.Addr16(addr)
	v.Addr, v.Family, v.Flags = a, fam, backendExists
	if err := e.objs.ProbeTargets.Put(id, &v); err != nil {
		return fmt.Errorf("set probe target %d (%s): %w", id, addr, err)
	}
	return nil
}

// DeleteTarget forgets id: its probes are dropped (probe_no_backend).
func (e *Encap) DeleteTarget(id uint32) error {
	if err := e.objs.ProbeTargets.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete probe target %d: %w", id, err)
	}
	return nil
}

// Attach puts the program on the egress of each interface (a clsact qdisc is added where
// there is none), replacing a filter an earlier run left.
func (e *Encap) Attach(ifaces []string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, name := range ifaces {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("probe encap on %s: %w", name, err)
		}
		idx := l.Attrs().Index
		q := &netlink.GenericQdisc{QdiscType: "clsact",
			QdiscAttrs: netlink.QdiscAttrs{LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
		if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("probe encap on %s: add clsact qdisc: %w", name, err)
		}
		if err := removeOurs(idx); err != nil {
			return fmt.Errorf("probe encap on %s: %w", name, err)
		}
		f := &netlink.BpfFilter{
			FilterAttrs: netlink.FilterAttrs{LinkIndex: idx, Parent: netlink.HANDLE_MIN_EGRESS, Handle: 1,
				Protocol: unix.ETH_P_ALL, Priority: filterPrio},
			Fd: e.objs.ProbeEncap.FD(), Name: filterName, DirectAction: true,
		}
		if err := netlink.FilterAdd(f); err != nil {
			return fmt.Errorf("probe encap on %s: add tc filter: %w", name, err)
		}
		e.attached[idx] = name
		e.log.Info("probe encap attached", "iface", name)
	}
	return nil
}

// removeOurs deletes the probe filters on ifindex's egress.
func removeOurs(idx int) error {
	l, err := netlink.LinkByIndex(idx)
	if err != nil {
		return err
	}
	fs, err := netlink.FilterList(l, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		return fmt.Errorf("list egress filters: %w", err)
	}
	for _, f := range fs {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Name == filterName {
			if err := netlink.FilterDel(bf); err != nil {
				return fmt.Errorf("remove the probe filter an earlier run left: %w", err)
			}
		}
	}
	return nil
}

// Detach removes the program from every interface it was attached to (the clsact qdisc
// stays: other filters may use it).
func (e *Encap) Detach() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for idx, name := range e.attached {
		if err := removeOurs(idx); err != nil {
			errs = append(errs, fmt.Errorf("probe encap on %s: %w", name, err))
		}
		delete(e.attached, idx)
	}
	return errors.Join(errs...)
}

// Close detaches and releases the program.
func (e *Encap) Close() error {
	return errors.Join(e.Detach(), e.objs.Close())
}

// Stats names the program's counters, summed over CPUs.
var statNames = []string{"probe_encap4", "probe_encap6", "probe_no_backend", "probe_no_source", "probe_not_ip", "probe_adjust"}

// Stats returns the program's counters.
func (e *Encap) Stats() (map[string]uint64, error) {
	out := map[string]uint64{}
	for i, n := range statNames {
		var per []uint64
		if err := e.objs.ProbeStats.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read probe stats: %w", err)
		}
		var s uint64
		for _, v := range per {
			s += v
		}
		out[n] = s
	}
	return out, nil
}
