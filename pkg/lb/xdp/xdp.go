package xdp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/l4lb/l4lb/internal/bpfobj"
	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/lb"
)

// Sentinel errors.
var (
	ErrNotFound     = errors.New("not found")
	ErrFull         = errors.New("table full")
	ErrIncompatible = errors.New("pinned maps incompatible with these options")
	ErrArch         = errors.New("architecture not supported by the XDP fast path")
)

// hostArch is the architecture the program would run on (a variable for tests).
var hostArch = runtime.GOARCH

// checkArch refuses architectures the conntrack table's lock-free protocol is not proven
// on: it relies on x86-64 ordering (stores seen in program order, loads not reordered
// with loads; bpf/conntrack.h). The NAT data planes and the socket LB have no such table.
func checkArch() error {
	if hostArch != "amd64" {
		return fmt.Errorf("%w: %s (its lock-free conntrack relies on x86-64 memory ordering); use dataplane: nftables, iptables or ipvs on this host", ErrArch, hostArch)
	}
	return nil
}

// Table sizes compiled into bpf/lb_consts.h (internal/limits has them from the C).
const (
	MaxVIPs     = limits.VIPMapSize
	MaxBackends = limits.BackendMapSize // backend ids 1..MaxBackends-1; 0 is reserved
)

// Defaults for Options.
const (
	DefaultConntrackSize = limits.DefaultConntrackSize
	DefaultUDPTimeout    = 30 * time.Second
	DefaultMTU           = 1500
	DefaultTooBigRate    = 100
	DefaultMemberGrace   = 2 * time.Second
	// DefaultMonitorRingSize: 1 MiB, about 5,000 events.
	DefaultMonitorRingSize = 1 << 20
)

// Options are fixed for the life of a loaded program.
type Options struct {
	// PinPath is a directory on a bpffs; maps are pinned there by name and reused by the
	// next Load. Empty: nothing is pinned (tests).
	PinPath string
	// RingSize is the Maglev ring size of VIPs that do not set their own, a prime.
	// Default lb.DefaultRingSize.
	RingSize uint32
	// RingSlots is the size of the flat rings array in slots: it holds both halves of
	// every VIP's ring (RingSlotsFor). Default DefaultRingSlots. A pinned array of another
	// size is migrated.
	RingSlots uint64
	// ConntrackSize is the number of conntrack entries. Default DefaultConntrackSize.
	ConntrackSize uint32
	// UDPTimeout is how long an idle UDP flow keeps its backend. Default DefaultUDPTimeout.
	UDPTimeout time.Duration
	// MTU of the link encapsulated packets leave by; a packet that would exceed it once
	// encapsulated is dropped and counted (drop_too_big). Default DefaultMTU.
	MTU uint32
	// SlotMapping is how a flow hash maps to a ring slot; default SlotModulo.
	SlotMapping SlotMapping
	// PairBuckets sizes vip_backends (which backends each VIP has, and their counters
	// per VIP), a power of two (PairBucketsFor). Default DefaultPairBuckets. A pinned map
	// is never shrunk.
	PairBuckets uint32
	// TooBigRate is how many ICMP too-big replies a second, per CPU, go to one source
	// /24 (IPv4) or /48 (IPv6); above it the packet is dropped (drop_too_big_rate).
	// Default DefaultTooBigRate; negative: no limit.
	TooBigRate int
	// MemberGrace is how long a backend removed from a VIP stays its member after the
	// ring without it is in, so that the VIP's conntrack entries naming it are still
	// followed: a connection whose first packet went to it just before the flip
	// completes. Default DefaultMemberGrace; negative: none.
	MemberGrace time.Duration
	// MonitorRingSize is the size in bytes of the monitor's ring buffer (a power of two
	// and a multiple of the page size). Default DefaultMonitorRingSize.
	MonitorRingSize uint32
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.RingSize == 0 {
		o.RingSize = lb.DefaultRingSize
	}
	if o.RingSlots == 0 {
		o.RingSlots = DefaultRingSlots
	}
	if o.ConntrackSize == 0 {
		o.ConntrackSize = DefaultConntrackSize
	}
	if o.UDPTimeout == 0 {
		o.UDPTimeout = DefaultUDPTimeout
	}
	if o.MTU == 0 {
		o.MTU = DefaultMTU
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PairBuckets == 0 {
		o.PairBuckets = DefaultPairBuckets
	}
	if o.TooBigRate == 0 {
		o.TooBigRate = DefaultTooBigRate
	}
	if o.MemberGrace == 0 {
		o.MemberGrace = DefaultMemberGrace
	}
	if o.MonitorRingSize == 0 {
		o.MonitorRingSize = DefaultMonitorRingSize
	}
}

// Config holds the settings that change at run time without reloading the program.
type Config struct {
	// NextHopMAC is the destination MAC of encapsulated packets. Nil: send them back to
	// the MAC each packet came from (the router, for an LB on a stick).
	NextHopMAC net.HardwareAddr
	// Source4 and Source6 are the prefixes outer source addresses are taken from; the
	// host bits carry per-flow entropy so backends spread flows over receive queues.
	// A zero prefix disables that family of backends (drop_no_source).
	Source4, Source6 netip.Prefix
}

// Dataplane is the loaded XDP load balancer.
type Dataplane struct {
	opts  Options
	log   *slog.Logger
	objs  xdplbObjects
	rings *ringState

	mu    sync.Mutex
	links map[string]link.Link
	vc    vipCache   // what this process wrote to vips and backends (vipcache.go)
	pairs *pairTable // vip_backends (pairs.go)
	// nexthops: the ifindexes nexthops has an entry for (read at Load).
	nexthops map[int]bool
	// membersPending: members_ready is 0 until every VIP the pinned maps held at Load
	// (unfilled, by id) has had its members written by SetVIP or was deleted.
	membersPending bool
	unfilled       map[uint32]bool
	// members: each VIP id's backends as last written, which a delayed removal of
	// members (MemberGrace) keeps; closed stops those removals.
	members map[uint32][]uint32
	closed  bool
	// early: links Load already pointed at this program (a migrating load).
	early map[string]bool

	// denyMu serializes deny list changes; deny4DirReady: deny4_dir follows deny4;
	// deny4DirLong counts its longer prefixes (prefilter_deny4dir.go).
	denyMu        sync.Mutex
	deny4DirReady bool
	deny4DirFresh bool // deny4_dir was created by this load (all zeros)
	deny4DirLong  map[uint32]uint32

	// tracer: the trace instance (trace.go), loaded by the first Trace.
	tracer tracer

	// onNewID: see OnNewVIPID (shared.go).
	onNewID []func(id uint32) error
	// policies are the prefilter policies by VIP (prefilter.go), written with the VIP.
	policies map[lb.VIPKey]Policy
	// allowByID is what allow_list holds, by VIP id (read once, then kept by writePolicy).
	allowByID map[uint32]map[xdplbAllowKey]bool
}

// Load loads the program and its maps (adopting pinned maps when opts.PinPath holds them).
// It attaches nothing.
func Load(opts Options) (*Dataplane, error) {
	opts.setDefaults()
	if err := checkArch(); err != nil {
		return nil, err
	}
	if err := checkPrime(opts.RingSize); err != nil {
		return nil, err
	}
	if n := opts.PairBuckets; n < 2 || n&(n-1) != 0 || n > MaxPairBuckets {
		return nil, fmt.Errorf("pair buckets %d: must be a power of two in 2..%d", n, MaxPairBuckets)
	}
	if n := opts.MonitorRingSize; n < uint32(os.Getpagesize()) || n&(n-1) != 0 {
		return nil, fmt.Errorf("monitor ring size %d: must be a power of two of at least %d bytes", n, os.Getpagesize())
	}
	spec, err := loadXdplb()
	if err != nil {
		return nil, fmt.Errorf("load xdp_lb spec: %w", err)
	}
	blocks := (opts.RingSlots + RingBlockSlots - 1) / RingBlockSlots
	if blocks > 1<<26 {
		return nil, fmt.Errorf("ring slots %d: at most %d", opts.RingSlots, uint64(1<<26)*RingBlockSlots)
	}
	if opts.PinPath != "" {
		// A pinned rings array is never shrunk (the VIPs it holds would not fit).
		blocks = max(blocks, uint64(pinnedRingBlocks(opts.PinPath)))
	}
	spec.Maps["rings"].MaxEntries = uint32(blocks)
	pairBuckets := opts.PairBuckets
	if opts.PinPath != "" {
		pairBuckets = max(pairBuckets, pinnedPairBuckets(opts.PinPath))
	}
	spec.Maps["vip_backends"].MaxEntries = pairBuckets
	spec.Maps["pair_stats"].MaxEntries = pairBuckets * pairWays
	spec.Maps["conntrack"].MaxEntries = ctBucketCount(opts.ConntrackSize)
	spec.Maps["monitor_events"].MaxEntries = opts.MonitorRingSize
	if err := setLoadVariables(spec, opts, pairBuckets); err != nil {
		return nil, err
	}
	var copts ebpf.CollectionOptions
	if opts.PinPath == "" {
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinNone
		}
	} else {
		if err := os.MkdirAll(opts.PinPath, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
		copts.Maps.PinPath = opts.PinPath
	}
	log := opts.Logger.With("component", "xdp")
	// Membership (vip_backends) made by this load over an adopted conntrack table (an
	// upgrade, or a resize): until a pass has filled it for every VIP, entries are
	// followed without the check (members_ready; see membersReady).
	membersPending := opts.PinPath != "" && pinExists(opts.PinPath, "conntrack") &&
		pinnedPairBuckets(opts.PinPath) != pairBuckets
	if membersPending {
		if err := spec.Variables["members_ready"].Set(uint32(0)); err != nil {
			return nil, fmt.Errorf("set members_ready: %w", err)
		}
	}
	mig := &migration{}
	if opts.PinPath != "" {
		if mig, err = migratePinned(spec, opts.PinPath, log); err != nil {
			return nil, err
		}
	}
	defer mig.close()
	d := &Dataplane{opts: opts, log: log, links: map[string]link.Link{}, membersPending: membersPending, early: map[string]bool{}}
	// A deny4_dir this load creates is all zeros: building it touches only the entries
	// the deny list sets (its 32 MiB stay out of the daemon's resident memory).
	if opts.PinPath == "" {
		d.deny4DirFresh = true
	} else if _, err := os.Stat(filepath.Join(opts.PinPath, "deny4_dir")); errors.Is(err, os.ErrNotExist) {
		d.deny4DirFresh = true
	}
	if err := spec.LoadAndAssign(&d.objs, &copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("load xdp_lb: %w (%w: remove %s to start afresh)", err, ErrIncompatible, opts.PinPath)
		}
		return nil, bpfobj.DescribeLoad("xdp_lb", err)
	}
	if err := d.syncDeny4Dir(); err != nil {
		d.objs.Close()
		return nil, err
	}
	if err := d.refreshPrefilterOn(); err != nil {
		d.objs.Close()
		return nil, err
	}
	if d.nexthops, err = readNexthops(d.objs.Nexthops); err != nil {
		d.objs.Close()
		return nil, err
	}
	if d.pairs, err = newPairTable(d.objs.VipBackends, d.objs.PairStats); err != nil {
		d.objs.Close()
		return nil, err
	}
	rs, err := newRingState(uint32(blocks))
	if err != nil {
		d.objs.Close()
		return nil, err
	}
	d.rings = rs
	if err := d.refreshVIPCache(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.adoptRings(); err != nil {
		d.Close()
		return nil, fmt.Errorf("adopt pinned rings: %w", err)
	}
	if d.membersPending {
		d.unfilled = map[uint32]bool{}
		for _, m := range d.vc.vips {
			d.unfilled[m.Id] = true
		}
		if err := d.membersReady(); err != nil {
			d.Close()
			return nil, err
		}
	}
	if len(mig.replaced) > 0 {
		// The previous program, still attached, reads the maps that were replaced as they
		// were and the shared ones as this program writes them (ring_sel naming blocks
		// of the new rings): it must not see one write of the first pass. Its links run
		// this program from now on.
		if err := d.adoptPinnedLinks(); err != nil {
			d.Close()
			return nil, err
		}
		if !mig.ctCopied.IsZero() {
			// The window in which the previous program's new flows missed the copy.
			log.Info("conntrack copy ended before the link update", "window", time.Since(mig.ctCopied).Round(time.Microsecond))
		}
	}
	return d, nil
}

// setLoadVariables sets the program's load-time constants from opts (Load, and the trace
// instance, which must decide as the attached program does).
func setLoadVariables(spec *ebpf.CollectionSpec, opts Options, pairBuckets uint32) error {
	for name, v := range map[string]any{
		"udp_timeout_ns": uint64(opts.UDPTimeout.Nanoseconds()),
		"mtu":            opts.MTU,
		"slot_scaled":    uint32(opts.SlotMapping),
		"ct_buckets":     ctBucketCount(opts.ConntrackSize),
		"pair_shift":     pairShift(pairBuckets),
		"too_big_rate":   uint32(max(opts.TooBigRate, 0)),
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

func pinExists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, name))
	return err == nil
}

// adoptPinnedLinks points every XDP link pinned in the pin directory at this program;
// Attach then adopts them.
func (d *Dataplane) adoptPinnedLinks() error {
	entries, err := os.ReadDir(d.opts.PinPath)
	if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range entries {
		ifname, ok := strings.CutPrefix(e.Name(), "link_")
		if !ok {
			continue
		}
		pin := filepath.Join(d.opts.PinPath, e.Name())
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			return fmt.Errorf("open pinned xdp link %s: %w", pin, err)
		}
		if err := l.Update(d.objs.XdpLb); err != nil {
			// A link whose interface is gone runs nothing (the kernel detached it): it
			// does not stop the others. Attach on that name makes a new link.
			l.Close()
			d.log.Warn("pinned xdp link not updated to the new program: its interface is gone or refused it", "iface", ifname, "pin", pin, "error", err)
			continue
		}
		d.links[ifname] = l
		d.early[ifname] = true
		d.log.Info("pinned maps migrated: xdp link now runs the new program", "iface", ifname)
	}
	return nil
}

func checkPrime(n uint32) error {
	if n < 3 {
		return fmt.Errorf("ring size %d: %w", n, lb.ErrRingSize)
	}
	if !limits.IsPrime(n) {
		return fmt.Errorf("ring size %d is not prime: %w", n, lb.ErrRingSize)
	}
	return nil
}

// Program returns the XDP program (for tests and benchmarks).
func (d *Dataplane) Program() *ebpf.Program { return d.objs.XdpLb }

// Options returns the options the program was loaded with (defaults filled in).
func (d *Dataplane) Options() Options { return d.opts }

// SetConfig writes the run-time settings.
func (d *Dataplane) SetConfig(c Config) error {
	var v xdplbLbConfig
	if c.NextHopMAC != nil {
		if len(c.NextHopMAC) != 6 {
			return fmt.Errorf("next hop mac %s: want 6 bytes", c.NextHopMAC)
		}
		copy(v.NexthopMac[:], c.NextHopMAC)
	}
	if c.Source4.IsValid() {
		if !c.Source4.Addr().Is4() {
			return fmt.Errorf("source4 %s: not an ipv4 prefix", c.Source4)
		}
		v.HasSrc4 = 1
		v.Src4 = c.Source4.Masked().Addr().As4()
		v.Src4HostMask = hostMask(32 - c.Source4.Bits())
	}
	if c.Source6.IsValid() {
		if !c.Source6.Addr().Is6() || c.Source6.Addr().Is4In6() {
			return fmt.Errorf("source6 %s: not an ipv6 prefix", c.Source6)
		}
		v.HasSrc6 = 1
		v.Src6 = c.Source6.Masked().Addr().As16()
		v.Src6HostMask = hostMask(128 - c.Source6.Bits())
	}
	if err := d.objs.LbCfg.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("write lb_cfg: %w", err)
	}
	return nil
}

// hostMask returns a mask of the low n bits, at most 32. The all-zero and all-ones host
// parts are avoided only by the operator's choice of prefix; a /32 gives no entropy.
// SetNextHops sets the next hop MAC of packets leaving by each interface (by ifindex):
// an interface without an entry uses Config.NextHopMAC, or sends back to the sender.
// Entries of interfaces not in hops are cleared.
func (d *Dataplane) SetNextHops(hops map[int]net.HardwareAddr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for idx, mac := range hops {
		if idx <= 0 || idx >= maxIfindex {
			return fmt.Errorf("next hop of ifindex %d: must be in 1..%d", idx, maxIfindex-1)
		}
		if len(mac) != 6 {
			return fmt.Errorf("next hop of ifindex %d: %q is not a 6-byte MAC", idx, mac)
		}
	}
	var errs []error
	for idx := range d.nexthops {
		if _, keep := hops[idx]; !keep {
			if err := d.objs.Nexthops.Put(uint32(idx), &xdplbNexthop{}); err != nil {
				errs = append(errs, fmt.Errorf("clear next hop of ifindex %d: %w", idx, err))
				continue
			}
			delete(d.nexthops, idx)
		}
	}
	for idx, mac := range hops {
		v := xdplbNexthop{Set: 1}
		copy(v.Mac[:], mac)
		if err := d.objs.Nexthops.Put(uint32(idx), &v); err != nil {
			errs = append(errs, fmt.Errorf("set next hop of ifindex %d: %w", idx, err))
			continue
		}
		if d.nexthops == nil {
			d.nexthops = map[int]bool{}
		}
		d.nexthops[idx] = true
	}
	return errors.Join(errs...)
}

// readNexthops returns the ifindexes a (pinned) nexthops map has an entry for.
func readNexthops(m *ebpf.Map) (map[int]bool, error) {
	out := map[int]bool{}
	err := batchWalk(m, func(k *uint32, v *xdplbNexthop) {
		if v.Set != 0 {
			out[int(*k)] = true
		}
	})
	return out, err
}

// NextHops returns the per-interface next hops the data plane holds.
func (d *Dataplane) NextHops() (map[int]net.HardwareAddr, error) {
	out := map[int]net.HardwareAddr{}
	err := batchWalk(d.objs.Nexthops, func(k *uint32, v *xdplbNexthop) {
		if v.Set != 0 {
			out[int(*k)] = append(net.HardwareAddr(nil), v.Mac[:]...)
		}
	})
	return out, err
}

// backendExists is BACKEND_F_EXISTS of backend.flags.
const backendExists = limits.FlagBackendExists

// vip_meta.flags are the model's VIPFlags bit for bit (SetVIP copies them): the build
// fails when VIP_F_HASH_NO_SPORT and lb.FlagHashNoSourcePort part.
var _ = [1]struct{}{}[uint32(lb.FlagHashNoSourcePort)^limits.FlagVIPHashNoSport]

// maxIfindex is MAX_IFINDEX: the nexthops map's size.
const maxIfindex = limits.MaxIfindex

func hostMask(n int) uint32 {
	if n >= 32 {
		return 0xffffffff
	}
	return 1<<uint(n) - 1
}

// SetBackend writes (or rewrites) a backend entry; established flows to it keep working.
func (d *Dataplane) SetBackend(id uint32, addr netip.Addr) error {
	if id == 0 || id >= MaxBackends {
		return fmt.Errorf("backend id %d: must be in 1..%d", id, MaxBackends-1)
	}
	if !addr.IsValid() {
		return fmt.Errorf("backend %d: invalid address", id)
	}
	a, fam := bpfobj.Addr16(addr)
	v := xdplbBackend{Addr: a, Family: fam, Flags: backendExists}
	if err := d.objs.Backends.Put(id, &v); err != nil {
		return fmt.Errorf("write backend %d: %w", id, err)
	}
	d.vc.setBackend(id, addr)
	return nil
}

// DeleteBackend marks a backend gone: flows that conntrack pinned to it are re-hashed.
func (d *Dataplane) DeleteBackend(id uint32) error {
	if id == 0 || id >= MaxBackends {
		return fmt.Errorf("backend id %d: must be in 1..%d", id, MaxBackends-1)
	}
	if err := d.waitFlips(); err != nil {
		return fmt.Errorf("clear backend %d: %w", id, err)
	}
	if err := d.objs.Backends.Put(id, &xdplbBackend{}); err != nil {
		return fmt.Errorf("clear backend %d: %w", id, err)
	}
	d.vc.setBackend(id, netip.Addr{})
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dropLeftMembers(id)
}

// dropLeftMembers removes backend id from the members of every VIP that no longer lists
// it, at once, grace period or not: the id is deleted or about to name another address,
// and a VIP's entry naming it must not be followed to that address. The caller holds d.mu.
func (d *Dataplane) dropLeftMembers(id uint32) error {
	var errs []error
	for _, vip := range d.pairs.vipsOf(id) {
		if !slices.Contains(d.members[vip], id) {
			errs = append(errs, d.pairs.remove(vip, id))
		}
	}
	return errors.Join(errs...)
}

// Backends returns the backends present in the map, by id. One batch read: the array
// has MaxBackends slots and a lookup per slot would cost a syscall each.
func (d *Dataplane) Backends() (map[uint32]netip.Addr, error) {
	out := map[uint32]netip.Addr{}
	keys := make([]uint32, MaxBackends)
	vals := make([]xdplbBackend, MaxBackends)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Backends.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			if vals[i].Flags&backendExists != 0 {
				out[keys[i]] = addrFrom16(vals[i].Addr, vals[i].Family)
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read backends: %w", err)
		}
		if n == 0 {
			return out, nil
		}
	}
}

func vipKey(k lb.VIPKey) xdplbVipKey {
	a, fam := bpfobj.Addr16(k.Addr)
	return xdplbVipKey{Addr: a, Port: htons(k.Port), Proto: uint8(k.Proto), Family: fam}
}

func vipAddrKey(k lb.VIPKey) xdplbVipKey {
	a, fam := bpfobj.Addr16(k.Addr)
	return xdplbVipKey{Addr: a, Family: fam}
}

// SetVIP programs a VIP: its backends, then a freshly built Maglev ring swapped in whole,
// then the VIP entry. Backends with weight 0 stay in the backends map (their established
// flows continue) but get no ring slot. It returns the VIP's id (the index of its counters).
// Calls for different VIPs may run concurrently; calls for the same VIP must not.
func (d *Dataplane) SetVIP(v lb.VIP) (uint32, error) {
	if err := v.Validate(); err != nil {
		return 0, err
	}
	size := v.RingSize
	if size == 0 {
		size = d.opts.RingSize
	}
	table, err := lb.MaglevTable(v.Backends, size)
	if err != nil {
		return 0, fmt.Errorf("build ring for %s: %w", v.Key, err)
	}
	key := vipKey(v.Key)
	meta, fresh, err := d.reserveVIP(key, v)
	if err != nil {
		return 0, err
	}
	// The ring is written whole into the VIP's inactive half and flipped in (rings.go).
	if err := d.writeRing(meta.Id, table, fresh); err != nil {
		if fresh {
			d.mu.Lock()
			d.vc.releaseID(meta.Id)
			d.mu.Unlock()
		}
		return 0, fmt.Errorf("vip %s: %w", v.Key, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.writePolicy(meta.Id, d.policyFor(v.Key)); err != nil {
		return 0, fmt.Errorf("vip %s: %w", v.Key, err)
	}
	if err := d.objs.Vips.Put(&key, &meta); err != nil {
		if fresh {
			d.vc.releaseID(meta.Id)
		}
		return 0, fmt.Errorf("write vip %s: %w", v.Key, err)
	}
	ak := vipAddrKey(v.Key)
	if err := d.objs.VipAddrs.Put(&ak, uint32(1)); err != nil {
		return 0, fmt.Errorf("write vip address %s: %w", v.Key.Addr, err)
	}
	d.vc.add(key, meta)
	// Backends the VIP no longer has stop being followed by its conntrack entries one
	// grace period after the ring without them is in.
	if err := d.dropStaleMembers(meta.Id, backendIDs(v)); err != nil {
		return 0, fmt.Errorf("vip %s: %w", v.Key, err)
	}
	delete(d.unfilled, meta.Id)
	return meta.Id, d.membersReady()
}

// dropStaleMembers removes the VIP's members not in ids, at once without a grace period,
// else once it has passed (members added again meanwhile stay). The caller holds d.mu.
func (d *Dataplane) dropStaleMembers(id uint32, ids []uint32) error {
	if d.members == nil {
		d.members = map[uint32][]uint32{}
	}
	d.members[id] = ids
	if d.opts.MemberGrace <= 0 {
		return d.pairs.removeStale(id, ids)
	}
	time.AfterFunc(d.opts.MemberGrace, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		now, ok := d.members[id]
		if d.closed || !ok {
			return // closed, or the VIP was deleted (its members with it)
		}
		if err := d.pairs.removeStale(id, now); err != nil {
			d.log.Warn("remove backends no longer behind a VIP from its members", "vip_id", id, "error", err)
		}
	})
	return nil
}

func backendIDs(v lb.VIP) []uint32 {
	ids := make([]uint32, len(v.Backends))
	for i, b := range v.Backends {
		ids[i] = b.ID
	}
	return ids
}

// reserveVIP finds the VIP's id (allocating and reserving a free one for a new VIP,
// whose counters it zeroes) and writes its backends.
func (d *Dataplane) reserveVIP(key xdplbVipKey, v lb.VIP) (xdplbVipMeta, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	meta, exists := d.vc.vips[key]
	if !exists {
		id, ok := d.vc.allocID()
		if !ok {
			return meta, false, fmt.Errorf("add %s: %w (%d vips)", v.Key, ErrFull, MaxVIPs)
		}
		meta.Id = id
		if err := d.zeroVIPCounters(id); err != nil {
			d.vc.releaseID(id)
			return meta, false, err
		}
		for _, f := range d.onNewID {
			if err := f(id); err != nil {
				return meta, false, err
			}
		}
	}
	meta.Flags = uint32(v.Flags)
	for _, b := range v.Backends {
		if d.vc.hasBackend(b.ID, b.Addr) {
			continue
		}
		if err := d.dropLeftMembers(b.ID); err != nil {
			if !exists {
				d.vc.releaseID(meta.Id)
			}
			return meta, false, fmt.Errorf("vip %s: %w", v.Key, err)
		}
		if err := d.SetBackend(b.ID, b.Addr); err != nil {
			if !exists {
				d.vc.releaseID(meta.Id)
			}
			return meta, false, fmt.Errorf("vip %s: %w", v.Key, err)
		}
	}
	// Members before the ring that names them. A new id had none (a VIP that held it
	// was removed whole), but a crash or a failed delete may have left some: those go
	// first, so that every pair of the new VIP counts from zero.
	var err error
	if !exists {
		err = d.pairs.removeStale(meta.Id, nil)
	}
	if err == nil {
		err = d.pairs.setMembers(meta.Id, backendIDs(v))
	}
	if err != nil {
		if !exists {
			d.vc.releaseID(meta.Id)
		}
		return meta, false, fmt.Errorf("vip %s: %w", v.Key, err)
	}
	return meta, !exists, nil
}

func (d *Dataplane) zeroVIPCounters(id uint32) error {
	zero := make([]xdplbVipCounters, ebpf.MustPossibleCPU())
	if err := d.objs.VipStats.Put(id, zero); err != nil {
		return fmt.Errorf("reset counters of vip %d: %w", id, err)
	}
	if err := d.objs.VipGuards.Put(id, make([]xdplbVipGuard, len(zero))); err != nil {
		return fmt.Errorf("reset guard counters of vip %d: %w", id, err)
	}
	return nil
}

// DeleteVIP removes a VIP: its entry first (new packets pass), then its ring. Backends
// are left to the caller (DeleteBackend), since another VIP may share them.
func (d *Dataplane) DeleteVIP(k lb.VIPKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := vipKey(k)
	meta, ok := d.vc.vips[key]
	if !ok {
		return fmt.Errorf("delete vip %s: %w", k, ErrNotFound)
	}
	if err := d.objs.Vips.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	d.vc.remove(key)
	ak := vipAddrKey(k)
	if d.vc.addrs[ak] == 0 {
		if err := d.objs.VipAddrs.Delete(&ak); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete vip address %s: %w", k.Addr, err)
		}
	}
	if err := d.freeRings(meta.Id); err != nil {
		return fmt.Errorf("delete ring of %s: %w", k, err)
	}
	if err := d.pairs.removeStale(meta.Id, nil); err != nil {
		return fmt.Errorf("delete %s: %w", k, err)
	}
	delete(d.members, meta.Id)
	delete(d.unfilled, meta.Id)
	return d.membersReady()
}

// VIPs returns the programmed VIPs and their ids.
func (d *Dataplane) VIPs() (map[lb.VIPKey]uint32, error) {
	entries, err := d.vipEntries()
	if err != nil {
		return nil, err
	}
	out := make(map[lb.VIPKey]uint32, len(entries))
	for k, m := range entries {
		out[lb.VIPKey{Addr: addrFrom16(k.Addr, k.Family), Port: htons(k.Port), Proto: lb.Proto(k.Proto)}] = m.Id
	}
	return out, nil
}

// Counters are packets and bytes (IP bytes as received) summed over CPUs.
type Counters struct {
	Packets, Bytes, NewFlows uint64
}

// VIPCounters returns the counters of the VIP with id.
func (d *Dataplane) VIPCounters(id uint32) (Counters, error) {
	var per []xdplbVipCounters
	if err := d.objs.VipStats.Lookup(id, &per); err != nil {
		return Counters{}, fmt.Errorf("read counters of vip %d: %w", id, err)
	}
	var c Counters
	for _, p := range per {
		c.Packets += p.Packets
		c.Bytes += p.Bytes
		c.NewFlows += p.NewFlows
	}
	return c, nil
}

// Stats returns the named global counters summed over CPUs.
func (d *Dataplane) Stats() (map[string]uint64, error) {
	return bpfobj.SumCounters(d.objs.Stats, statNames[:])
}

// Attach attaches the program to ifname through a bpf_link, in native mode, or in generic
// mode (logged) where the driver has no native XDP. With a PinPath the link is pinned, and
// an existing pinned link is updated to this program instead, so forwarding never stops.
func (d *Dataplane) Attach(ifname string) (mode string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.early[ifname] {
		delete(d.early, ifname)
		return "adopted", nil
	}
	if _, ok := d.links[ifname]; ok {
		return "", fmt.Errorf("attach xdp to %s: already attached", ifname)
	}
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return "", fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}
	pin := ""
	if d.opts.PinPath != "" {
		pin = filepath.Join(d.opts.PinPath, "link_"+ifname)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			if err := l.Update(d.objs.XdpLb); err != nil {
				l.Close()
				return "", fmt.Errorf("update pinned xdp link on %s: %w", ifname, err)
			}
			d.links[ifname] = l
			d.log.Info("adopted pinned xdp link", "iface", ifname, "pin", pin)
			return "adopted", nil
		}
	}
	mode = "native"
	l, err := link.AttachXDP(link.XDPOptions{Program: d.objs.XdpLb, Interface: iface.Index, Flags: link.XDPDriverMode})
	if err != nil {
		d.log.Warn("native xdp unavailable, falling back to generic", "iface", ifname, "error", err)
		mode = "generic"
		l, err = link.AttachXDP(link.XDPOptions{Program: d.objs.XdpLb, Interface: iface.Index, Flags: link.XDPGenericMode})
		if err != nil {
			return "", fmt.Errorf("attach xdp to %s: %w", ifname, err)
		}
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			l.Close()
			return "", fmt.Errorf("pin xdp link on %s: %w", ifname, err)
		}
	}
	d.links[ifname] = l
	d.log.Info("attached xdp", "iface", ifname, "mode", mode)
	return mode, nil
}

// membersReady turns the membership check on once vip_backends holds the members of
// every VIP: each VIP the pinned maps held at Load was written again (or deleted). A
// first pass that fails part way leaves it off: an entry of a VIP not yet written would
// otherwise be hashed again, away from a drained backend. The caller holds d.mu.
func (d *Dataplane) membersReady() error {
	if !d.membersPending || len(d.unfilled) > 0 {
		return nil
	}
	if err := d.objs.MembersReady.Set(uint32(1)); err != nil {
		return fmt.Errorf("set members_ready: %w", err)
	}
	d.membersPending = false
	return nil
}

// Detach removes the program from ifname (and its pin).
func (d *Dataplane) Detach(ifname string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.links[ifname]
	if !ok {
		return fmt.Errorf("detach xdp from %s: %w", ifname, ErrNotFound)
	}
	delete(d.links, ifname)
	if err := l.Unpin(); err != nil && d.opts.PinPath != "" {
		d.log.Warn("unpin xdp link", "iface", ifname, "error", err)
	}
	if err := l.Close(); err != nil {
		return fmt.Errorf("detach xdp from %s: %w", ifname, err)
	}
	return nil
}

// Close releases this process's handles. Pinned maps and pinned links stay, so traffic
// keeps flowing; unpinned links are detached.
func (d *Dataplane) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

func (d *Dataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	var errs []error
	for name, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link %s: %w", name, err))
		}
	}
	d.links = map[string]link.Link{}
	d.tracer.close()
	if err := d.objs.Close(); err != nil {
		errs = append(errs, err)
	}
	d.rings.close()
	return errors.Join(errs...)
}

// Unpin removes every pinned map of this program (cleanup); call after detaching.
func (d *Dataplane) Unpin() error {
	if d.opts.PinPath == "" {
		return nil
	}
	var errs []error
	if err := os.Remove(filepath.Join(d.opts.PinPath, "lb_meta")); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, m := range []*ebpf.Map{d.objs.Vips, d.objs.VipAddrs, d.objs.Rings, d.objs.RingSel, d.objs.Backends, d.objs.Conntrack, d.objs.LbCfg, d.objs.Stats, d.objs.VipStats, d.objs.VipBackends, d.objs.PairStats, d.objs.Nexthops, d.objs.TooBigRateState,
		d.objs.Deny4, d.objs.Deny6, d.objs.AllowList, d.objs.VipPolicies, d.objs.VipGuards, d.objs.PrefilterOn,
		d.objs.Deny4Dir, d.objs.Deny4Counts} {
		if err := m.Unpin(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
