// Package ipvs is the IPVS fallback data plane: each VIP is an IPVS virtual service with
// the kernel's Maglev scheduler (mh), its backends real servers reached through IPIP
// tunnels (the same backends and decap as XDP mode) or NAT (masq), programmed over
// netlink.
package ipvs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	cipvs "github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

// Scheduler is IPVS's Maglev hashing scheduler (kernel 4.18+).
const Scheduler = "mh"

// The mh scheduler's flags (ipvsadm's --sched-flags).
const (
	// flagMHFallback: a connection whose chosen server is unavailable (weight 0,
	// overloaded) goes to the next one in the table instead of being dropped.
	flagMHFallback = cipvs.ServiceSchedulerOpt1
	// flagMHPort: hash the client's source port as well as its address.
	flagMHPort = cipvs.ServiceSchedulerOpt2
)

// MaxBackendID is the largest backend id this data plane names (ids only live in its
// state file; IPVS itself has none).
const MaxBackendID = 1<<24 - 1

// Sentinel errors.
var (
	// ErrNotOurs: a virtual service with the VIP's address, port and protocol exists, and
	// l4lb did not create it.
	ErrNotOurs = errors.New("virtual service exists and is not l4lb's")
	// ErrNoIPVS: the kernel has no IPVS (module ip_vs missing or not loadable).
	ErrNoIPVS = errors.New("no ipvs in this kernel")
	// ErrMixedFamily: masq cannot NAT between address families (only tunnel can).
	ErrMixedFamily = errors.New("masq forwarding needs a backend of the vip's address family")
)

// Options configure the data plane.
type Options struct {
	// StateFile records which virtual services l4lb created and the backend ids it gave
	// out; "" keeps them in memory only (tests). IPVS has no owner field, so this record
	// is how l4lb tells its own services from others' (which it never touches).
	StateFile string
	// Device is a dummy interface the data plane creates and puts each VIP address on,
	// so the kernel delivers VIP traffic locally, where IPVS intercepts it. "": the
	// operator makes the VIPs local (e.g. on lo).
	Device string
	// Resync is how often Watch compares the kernel's table with what l4lb programmed.
	Resync time.Duration
	Logger *slog.Logger
	// Reason says why IPVS was chosen (Info).
	Reason string
}

// Dataplane is the IPVS data plane: lb.Dataplane over one netlink client in the
// network namespace it was created in.
type Dataplane struct {
	opts Options
	log  *slog.Logger
	c    cipvs.Client
	// nl manages the VIP device; like c, its sockets live in the namespace New ran in.
	nl *netlink.Handle

	mu    sync.Mutex
	state state
	// onDrift is called when the kernel's table no longer holds what was programmed.
	onDrift func()
	warned  map[int]bool // address families warnForwarding warned about
	stop    context.CancelFunc
	done    chan struct{}
}

// state is what the state file keeps.
type state struct {
	// Services l4lb created, with what it programmed into them.
	Services map[string]serviceRecord `json:"services"`
	// Backends: every id l4lb handed out, by id.
	Backends map[uint32]netip.Addr `json:"backends"`
}

type serviceRecord struct {
	Key      lb.VIPKey    `json:"-"`
	Addr     netip.Addr   `json:"addr"`
	Port     uint16       `json:"port"`
	Proto    lb.Proto     `json:"proto"`
	Flags    lb.VIPFlags  `json:"flags"`
	Backends []lb.Backend `json:"backends"`
}

var _ lb.Dataplane = (*Dataplane)(nil)

// Available tells whether this kernel has IPVS: it opens the IPVS generic netlink family
// (loading ip_vs first if it is a module not loaded yet) and, if that works, the reason
// names the IPVS version. The mh scheduler is loaded by IPVS when a service asks for it.
func Available() (bool, string) {
	c, err := open()
	if err != nil {
		return false, fmt.Sprintf("generic netlink family IPVS: %v", err)
	}
	defer closeClient(c)
	info, err := c.Info()
	if err != nil {
		return false, fmt.Sprintf("ipvs present but unreadable: %v", err)
	}
	return true, fmt.Sprintf("ipvs %d.%d.%d", info.Version[0], info.Version[1], info.Version[2])
}

// New opens IPVS in the caller's network namespace and reads the state file.
func New(opts Options) (*Dataplane, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Resync == 0 {
		opts.Resync = 5 * time.Second
	}
	c, err := open()
	if err != nil {
		return nil, fmt.Errorf("open ipvs: %w: %w", ErrNoIPVS, err)
	}
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		closeClient(c)
		return nil, fmt.Errorf("open rtnetlink: %w", err)
	}
	d := &Dataplane{opts: opts, log: opts.Logger.With("component", "ipvs"), c: c, nl: nl,
		state: state{Services: map[string]serviceRecord{}, Backends: map[uint32]netip.Addr{}}}
	if err := d.load(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Dataplane) load() error {
	if d.opts.StateFile == "" {
		return nil
	}
	b, err := os.ReadFile(d.opts.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read ipvs state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("parse ipvs state %s: %w", d.opts.StateFile, err)
	}
	if st.Services == nil {
		st.Services = map[string]serviceRecord{}
	}
	if st.Backends == nil {
		st.Backends = map[uint32]netip.Addr{}
	}
	for k, r := range st.Services {
		r.Key = lb.VIPKey{Addr: r.Addr, Port: r.Port, Proto: r.Proto}
		st.Services[k] = r
	}
	d.state = st
	return nil
}

// save writes the state file atomically (d.mu held).
func (d *Dataplane) save() error {
	if d.opts.StateFile == "" {
		return nil
	}
	b, err := json.MarshalIndent(d.state, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(d.opts.StateFile)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write ipvs state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".ipvs-state-*")
	if err != nil {
		return fmt.Errorf("write ipvs state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write ipvs state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write ipvs state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write ipvs state: %w", err)
	}
	if err := os.Rename(tmp.Name(), d.opts.StateFile); err != nil {
		return fmt.Errorf("write ipvs state: %w", err)
	}
	return nil
}

// Info implements lb.Dataplane.
func (d *Dataplane) Info() lb.Info {
	return lb.Info{Mode: "ipvs", Reason: d.opts.Reason, MaxBackendID: MaxBackendID}
}

func is6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }

func family(a netip.Addr) cipvs.AddressFamily {
	if is6(a) {
		return cipvs.INET6
	}
	return cipvs.INET
}

// service is the virtual service of a VIP as l4lb creates it.
func service(k lb.VIPKey, f lb.VIPFlags) cipvs.Service {
	s := cipvs.Service{Address: k.Addr.Unmap(), Port: k.Port, Protocol: cipvs.Protocol(k.Proto),
		Family: family(k.Addr), Scheduler: Scheduler, Flags: flagMHFallback}
	if f&lb.FlagHashNoSourcePort == 0 {
		s.Flags |= flagMHPort
	}
	if s.Family == cipvs.INET6 {
		s.Netmask = netmask.MaskFrom(128, 128)
	} else {
		s.Netmask = netmask.MaskFrom(32, 32)
	}
	return s
}

func forward(f lb.VIPFlags) cipvs.ForwardType {
	if f&lb.FlagForwardMasq != 0 {
		return cipvs.Masquerade
	}
	return cipvs.Tunnel
}

func destination(k lb.VIPKey, f lb.VIPFlags, b lb.Backend) cipvs.Destination {
	return cipvs.Destination{Address: b.Addr.Unmap(), Port: k.Port, Family: family(b.Addr),
		FwdMethod: forward(f), Weight: b.Weight, TunnelType: cipvs.IPIP}
}

// serviceFlagsMask: the flags l4lb sets and compares (the kernel adds "hashed").
const serviceFlagsMask = cipvs.ServicePersistent | cipvs.ServiceOnePacket | flagMHFallback | flagMHPort | cipvs.ServiceSchedulerOpt3

// kernelServices reads the kernel's table by VIP key (fwmark services are not l4lb's).
func (d *Dataplane) kernelServices() (map[lb.VIPKey]cipvs.ServiceExtended, error) {
	svcs, err := d.c.Services()
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list ipvs services: %w", err)
	}
	out := make(map[lb.VIPKey]cipvs.ServiceExtended, len(svcs))
	for _, s := range svcs {
		if s.FWMark != 0 {
			continue
		}
		out[lb.VIPKey{Addr: s.Address, Port: s.Port, Proto: lb.Proto(s.Protocol)}] = s
	}
	return out, nil
}

// matches tells whether the kernel's service and its destinations are exactly what r
// programmed.
func (d *Dataplane) matches(ks cipvs.ServiceExtended, r serviceRecord) (bool, error) {
	want := service(r.Key, r.Flags)
	if ks.Scheduler != want.Scheduler || ks.Flags&serviceFlagsMask != want.Flags {
		return false, nil
	}
	dests, err := d.c.Destinations(ks.Service)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("list destinations of %s: %w", r.Key, err)
	}
	have := make(map[netip.Addr]cipvs.DestinationExtended, len(dests))
	listed := map[netip.Addr]bool{}
	for _, b := range r.Backends {
		listed[b.Addr.Unmap()] = true
	}
	for _, de := range dests {
		// A leaving destination (weight 0, no longer listed) finishes its connections.
		if !listed[de.Address] && de.Weight != 0 {
			return false, nil
		}
		have[de.Address] = de
	}
	for _, b := range r.Backends {
		w := destination(r.Key, r.Flags, b)
		de, ok := have[w.Address]
		if !ok || de.Weight != w.Weight || de.FwdMethod != w.FwdMethod || de.Port != w.Port {
			return false, nil
		}
	}
	return true, nil
}

// Programmed implements lb.Programmer: the services l4lb created (Ready only if the
// kernel still holds each exactly as programmed, so a service someone removed or
// changed is rewritten by the next pass) and the backend ids it gave out.
func (d *Dataplane) Programmed() (lb.Programmed, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := lb.Programmed{VIPs: map[lb.VIPKey]lb.ProgrammedVIP{}, Backends: map[uint32]netip.Addr{}}
	ks, err := d.kernelServices()
	if err != nil {
		return p, err
	}
	for _, r := range d.state.Services {
		pv := lb.ProgrammedVIP{Flags: r.Flags}
		if s, ok := ks[r.Key]; ok {
			if pv.Ready, err = d.matches(s, r); err != nil {
				return p, err
			}
		}
		p.VIPs[r.Key] = pv
	}
	for id, a := range d.state.Backends {
		p.Backends[id] = a
	}
	return p, nil
}

// SetVIP implements lb.Programmer: the service is created if missing (and recorded
// first, so a crash between the two leaves nothing unowned), then destinations are
// added, updated and removed. Weight 0 keeps a destination (its connections continue)
// without new connections: mh leaves it out of its table.
func (d *Dataplane) SetVIP(v lb.VIP) error {
	if err := v.Validate(); err != nil {
		return err
	}
	fwd := forward(v.Flags)
	for _, b := range v.Backends {
		if b.ID > MaxBackendID {
			return fmt.Errorf("vip %s: backend id %d above %d", v.Key, b.ID, MaxBackendID)
		}
		if fwd == cipvs.Masquerade && family(b.Addr) != family(v.Key.Addr) {
			return fmt.Errorf("vip %s: backend %s: %w", v.Key, b.Addr, ErrMixedFamily)
		}
	}
	if fwd == cipvs.Masquerade {
		d.warnForwarding(v.Key)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ks, err := d.kernelServices()
	if err != nil {
		return err
	}
	k := v.Key
	k.Addr = k.Addr.Unmap()
	name := k.String()
	_, ours := d.state.Services[name]
	existing, exists := ks[k]
	if exists && !ours {
		return fmt.Errorf("vip %s: %w (remove it, or choose another vip)", k, ErrNotOurs)
	}
	rec := serviceRecord{Key: k, Addr: k.Addr, Port: k.Port, Proto: k.Proto, Flags: v.Flags, Backends: slices.Clone(v.Backends)}
	// Record first: the service and the backend ids.
	d.state.Services[name] = rec
	for _, b := range v.Backends {
		d.state.Backends[b.ID] = b.Addr.Unmap()
	}
	if err := d.save(); err != nil {
		return err
	}
	if err := d.addAddr(k.Addr); err != nil {
		return err
	}
	svc := service(k, v.Flags)
	if !exists {
		if err := d.c.CreateService(svc); err != nil {
			return fmt.Errorf("create ipvs service %s: %w", k, err)
		}
	} else if existing.Scheduler != svc.Scheduler || existing.Flags&serviceFlagsMask != svc.Flags {
		if err := d.c.UpdateService(svc); err != nil {
			return fmt.Errorf("update ipvs service %s: %w", k, err)
		}
	}
	dests, err := d.c.Destinations(svc)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("list destinations of %s: %w", k, err)
	}
	have := make(map[netip.Addr]cipvs.DestinationExtended, len(dests))
	for _, de := range dests {
		have[de.Address] = de
	}
	// Add and update first, so the table never empties while a backend is replaced.
	keep := map[netip.Addr]bool{}
	for _, b := range v.Backends {
		w := destination(k, v.Flags, b)
		keep[w.Address] = true
		de, ok := have[w.Address]
		switch {
		case !ok:
			if err := d.c.CreateDestination(svc, w); err != nil {
				return fmt.Errorf("add backend %s to %s: %w", w.Address, k, err)
			}
		case de.FwdMethod != w.FwdMethod:
			// The forwarding method of a destination with connections is changed in
			// place by the kernel; an update is enough.
			fallthrough
		case de.Weight != w.Weight || de.Port != w.Port:
			if err := d.c.UpdateDestination(svc, w); err != nil {
				return fmt.Errorf("update backend %s of %s: %w", w.Address, k, err)
			}
		}
	}
	// A backend that leaves keeps finishing its connections: IPVS drops the packets of
	// connections whose destination was removed (unless expire_nodest_conn), so it
	// stays with weight 0 until it has none; reapLeaving removes it then.
	for a, de := range have {
		if keep[a] {
			continue
		}
		if de.ActiveConnections+de.InactiveConnections == 0 {
			if err := d.c.RemoveDestination(svc, de.Destination); err != nil && !isNotExist(err) {
				return fmt.Errorf("remove backend %s from %s: %w", a, k, err)
			}
			continue
		}
		if de.Weight != 0 {
			leaving := de.Destination
			leaving.Weight = 0
			if err := d.c.UpdateDestination(svc, leaving); err != nil {
				return fmt.Errorf("drain leaving backend %s of %s: %w", a, k, err)
			}
		}
	}
	return nil
}

// reapLeaving removes the destinations of l4lb's services that are no longer listed
// and have no connections left; it returns how many it removed.
func (d *Dataplane) reapLeaving() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ks, err := d.kernelServices()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range d.state.Services {
		s, ok := ks[r.Key]
		if !ok {
			continue
		}
		listed := map[netip.Addr]bool{}
		for _, b := range r.Backends {
			listed[b.Addr.Unmap()] = true
		}
		dests, err := d.c.Destinations(s.Service)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return n, fmt.Errorf("list destinations of %s: %w", r.Key, err)
		}
		for _, de := range dests {
			if listed[de.Address] || de.Weight != 0 || de.ActiveConnections+de.InactiveConnections != 0 {
				continue
			}
			if err := d.c.RemoveDestination(s.Service, de.Destination); err != nil && !isNotExist(err) {
				return n, fmt.Errorf("remove leaving backend %s from %s: %w", de.Address, r.Key, err)
			}
			n++
		}
	}
	return n, nil
}

// DeleteVIP implements lb.Programmer. Only a service l4lb created is removed.
func (d *Dataplane) DeleteVIP(k lb.VIPKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	k.Addr = k.Addr.Unmap()
	name := k.String()
	r, ok := d.state.Services[name]
	if !ok {
		return fmt.Errorf("delete vip %s: not l4lb's", k)
	}
	if err := d.c.RemoveService(service(k, r.Flags)); err != nil && !isNotExist(err) {
		return fmt.Errorf("remove ipvs service %s: %w", k, err)
	}
	delete(d.state.Services, name)
	if err := d.save(); err != nil {
		return err
	}
	return d.delAddrUnused(k.Addr)
}

// DeleteBackend implements lb.Programmer: the id is forgotten (the destinations went
// with SetVIP).
func (d *Dataplane) DeleteBackend(id uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.state.Backends, id)
	return d.save()
}

func isNotExist(err error) bool {
	// ESRCH: no such service.
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, errNoService)
}

// SetForwarding implements lb.Dataplane: IPVS picks tunnel sources and next hops from
// the routing table, so there is nothing to set.
func (d *Dataplane) SetForwarding(lb.Forwarding) error { return nil }

// Counters implements lb.Dataplane: IPVS's own 64-bit statistics of l4lb's services
// (incoming packets and bytes, connections as new flows) and of their destinations,
// per VIP (VIPBackends) and summed per backend over the VIPs that list it.
func (d *Dataplane) Counters() (lb.Counters, error) {
	c := lb.Counters{VIPs: map[lb.VIPKey]lb.TrafficCounters{}, Backends: map[uint32]lb.TrafficCounters{},
		VIPBackends: map[lb.VIPKey]map[uint32]lb.TrafficCounters{}, Global: map[string]uint64{}}
	d.mu.Lock()
	defer d.mu.Unlock()
	ks, err := d.kernelServices()
	if err != nil {
		return c, err
	}
	for _, r := range d.state.Services {
		s, ok := ks[r.Key]
		if !ok {
			continue
		}
		c.VIPs[r.Key] = traffic(s.Stats64)
		c.Global["ipvs_connections"] += s.Stats64.Connections
		c.Global["ipvs_packets_in"] += s.Stats64.IncomingPackets
		c.Global["ipvs_packets_out"] += s.Stats64.OutgoingPackets
		dests, err := d.c.Destinations(s.Service)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return c, fmt.Errorf("list destinations of %s: %w", r.Key, err)
		}
		ids := map[netip.Addr]uint32{}
		for _, b := range r.Backends {
			ids[b.Addr.Unmap()] = b.ID
		}
		per := map[uint32]lb.TrafficCounters{}
		c.VIPBackends[r.Key] = per
		for _, de := range dests {
			id, ok := ids[de.Address]
			if !ok {
				continue
			}
			t := c.Backends[id]
			dt := traffic(de.Stats64)
			per[id] = dt
			t.Packets += dt.Packets
			t.Bytes += dt.Bytes
			t.NewFlows += dt.NewFlows
			c.Backends[id] = t
		}
	}
	return c, nil
}

func traffic(s cipvs.Stats) lb.TrafficCounters {
	return lb.TrafficCounters{Packets: s.IncomingPackets, Bytes: s.IncomingBytes, NewFlows: s.Connections}
}

// Attach implements lb.Dataplane. IPVS intercepts traffic to local addresses on every
// interface, so there is nothing to attach; it creates the VIP device if one is
// configured, starts Watch (until ctx ends or Detach) and returns "ipvs" for each
// interface.
func (d *Dataplane) Attach(ctx context.Context, ifaces []string) (map[string]string, error) {
	if err := d.ensureDevice(); err != nil {
		return nil, err
	}
	d.Watch(ctx)
	modes := map[string]string{}
	for _, i := range ifaces {
		modes[i] = "ipvs"
	}
	return modes, nil
}

// Detach implements lb.Dataplane: the services stay (like XDP's pinned program, they
// keep forwarding across a restart); Unpin removes them.
func (d *Dataplane) Detach(context.Context) error {
	d.StopWatch()
	return nil
}

// Close implements lb.Dataplane.
func (d *Dataplane) Close() error {
	d.StopWatch()
	d.nl.Close()
	return closeClient(d.c)
}

func closeClient(c cipvs.Client) error {
	if cl, ok := c.(interface{ Close() error }); ok {
		return cl.Close()
	}
	return nil
}

// Unpin implements lb.Dataplane: every service l4lb created, the VIP device and the
// state file go. Services that are not l4lb's stay.
func (d *Dataplane) Unpin() error {
	_, err := d.Cleanup()
	return err
}

// Cleanup removes l4lb's services, its VIP device and its state file, and returns what
// it removed.
func (d *Dataplane) Cleanup() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var removed []string
	var errs []error
	names := make([]string, 0, len(d.state.Services))
	for n := range d.state.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := d.state.Services[n]
		if err := d.c.RemoveService(service(r.Key, r.Flags)); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("remove ipvs service %s: %w", n, err))
			continue
		}
		delete(d.state.Services, n)
		removed = append(removed, "ipvs service "+n)
	}
	if len(errs) == 0 {
		d.state.Backends = map[uint32]netip.Addr{}
		if d.opts.StateFile != "" {
			if err := os.Remove(d.opts.StateFile); err == nil {
				removed = append(removed, d.opts.StateFile)
			} else if !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	} else if err := d.save(); err != nil {
		errs = append(errs, err)
	}
	if dev, err := d.deleteDevice(); err != nil {
		errs = append(errs, err)
	} else if dev != "" {
		removed = append(removed, "device "+dev)
	}
	return removed, errors.Join(errs...)
}

// SetOnDrift sets what Watch calls when the kernel's table drifted from what l4lb
// programmed (the daemon asks its controller for a pass, which rewrites it).
func (d *Dataplane) SetOnDrift(f func()) {
	d.mu.Lock()
	d.onDrift = f
	d.mu.Unlock()
}

// Watch compares the kernel's table with what l4lb programmed every Options.Resync and
// calls the SetOnDrift function when a service is missing or changed; it also removes
// leaving backends whose connections have ended. It returns at once; StopWatch (or
// Detach, Close) ends it.
func (d *Dataplane) Watch(ctx context.Context) {
	d.mu.Lock()
	if d.stop != nil {
		d.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	d.stop, d.done = cancel, make(chan struct{})
	done := d.done
	d.mu.Unlock()
	go func() {
		defer close(done)
		t := time.NewTicker(d.opts.Resync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := d.reapLeaving(); err != nil {
				d.log.Warn("remove leaving backends", "error", err)
			}
			p, err := d.Programmed()
			if err != nil {
				d.log.Warn("read ipvs table", "error", err)
				continue
			}
			drifted := false
			for k, v := range p.VIPs {
				if !v.Ready {
					d.log.Warn("ipvs service removed or changed behind l4lb's back, restoring", "vip", k.String())
					drifted = true
				}
			}
			d.mu.Lock()
			f := d.onDrift
			d.mu.Unlock()
			if drifted && f != nil {
				f()
			}
		}
	}()
}

// StopWatch ends Watch and waits for it.
func (d *Dataplane) StopWatch() {
	d.mu.Lock()
	stop, done := d.stop, d.done
	d.stop, d.done = nil, nil
	d.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// open opens the IPVS netlink family. The kernel does not load ip_vs for a generic
// netlink request, so if the family is missing, modprobe loads it (nothing else is run:
// IPVS itself is programmed over netlink only).
func open() (cipvs.Client, error) {
	c, err := cipvs.New()
	if err == nil {
		return c, nil
	}
	if out, merr := exec.Command("modprobe", "ip_vs").CombinedOutput(); merr != nil {
		return nil, fmt.Errorf("%w (modprobe ip_vs: %v: %s)", err, merr, strings.TrimSpace(string(out)))
	}
	return cipvs.New()
}

// warnForwarding logs (once per family) that masq replies will not be forwarded because
// the node does not forward packets of the VIP's family.
func (d *Dataplane) warnForwarding(k lb.VIPKey) {
	path, fam := "/proc/sys/net/ipv4/ip_forward", 4
	if is6(k.Addr) {
		path, fam = "/proc/sys/net/ipv6/conf/all/forwarding", 6
	}
	b, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		return
	}
	d.mu.Lock()
	warned := d.warned[fam]
	if d.warned == nil {
		d.warned = map[int]bool{}
	}
	d.warned[fam] = true
	d.mu.Unlock()
	if !warned {
		d.log.Warn("masq vip on a node that does not forward: the backends' replies will not reach the clients",
			"vip", k.String(), "sysctl", strings.TrimPrefix(path, "/proc/sys/"))
	}
}
