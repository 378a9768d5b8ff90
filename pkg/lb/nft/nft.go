// Package nft is the nftables data plane: each VIP is a DNAT rule that picks its backend
// through a map of the VIP's Maglev ring, hashed the way XDP hashes, in a table of its own.
package nft

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

// Sentinel errors.
var (
	ErrFamily = errors.New("nat cannot translate between ipv4 and ipv6")
	ErrNoNFT  = errors.New("nftables unavailable")
)

// Global counter names.
const (
	// CounterRestored counts objects of l4lb's table found missing (removed by someone
	// else) and written again.
	CounterRestored = "rules_restored"
	// CounterNoBackend counts new flows dropped because their ring slot names no backend.
	CounterNoBackend = "drop_no_backend"
)

// elementsPerMessage keeps a message's element list under netlink's 64 KiB attribute
// length; messagesPerBatch keeps a batch under a default send buffer, where a ring must be
// written in steps.
const (
	elementsPerMessage = 1024
	messagesPerBatch   = 4
)

// Options configure the data plane.
type Options struct {
	// RingSize is the number of slots of every VIP's ring (a prime; XDP's ring size, so
	// both pick the same backend for the same flow).
	RingSize uint32
	// NetNS, if non-zero, is a network namespace fd to program instead of the current one.
	NetNS  int
	Reason string
	Logger *slog.Logger
	// CheckInterval is how often Watch looks for removed rules (default 2s).
	CheckInterval time.Duration
}

// Dataplane is the nftables data plane; it implements lb.Dataplane.
type Dataplane struct {
	mu   sync.Mutex
	opts Options
	log  *slog.Logger
	t    *nftables.Table
	// written: what this process wrote and believes present, to tell a removal by
	// someone else from a VIP that was never there.
	writtenVIPs     map[lb.VIPKey]bool
	writtenBackends map[uint32]bool
	restored        uint64
}

var _ lb.Dataplane = (*Dataplane)(nil)

// MaxBackendID is the largest backend id (ids only name rules here).
const MaxBackendID = 1<<24 - 1

// New returns the data plane after checking that nftables can be programmed here (it
// creates l4lb's table, or adopts the one a previous run left).
func New(opts Options) (*Dataplane, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CheckInterval == 0 {
		opts.CheckInterval = 2 * time.Second
	}
	if opts.RingSize == 0 {
		return nil, fmt.Errorf("%w: ring size 0", lb.ErrRingSize)
	}
	d := &Dataplane{opts: opts, log: opts.Logger.With("component", "nft"), t: table(),
		writtenVIPs: map[lb.VIPKey]bool{}, writtenBackends: map[uint32]bool{}}
	if err := d.ensure(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoNFT, err)
	}
	return d, nil
}

func conn(netns int) (*nftables.Conn, error) {
	o := []nftables.ConnOption{nftables.WithSockOptions(bigSendBuffer)}
	if netns != 0 {
		o = append(o, nftables.WithNetNSFd(netns))
	}
	return nftables.New(o...)
}

// sendBuffer holds a whole ring in one batch (65537 IPv6 elements take about 3 MB), so a
// ring is created, filled and swapped in one transaction.
const sendBuffer = 8 << 20

// bigSendBuffer raises the netlink socket's send buffer past net.core.wmem_max
// (SO_SNDBUFFORCE needs CAP_NET_ADMIN, which programming nftables needs anyway); where it
// cannot, rings are written in more batches.
func bigSendBuffer(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer)
	}); err != nil || serr != nil {
		_ = c.SetWriteBuffer(sendBuffer)
	}
	return nil
}

func (d *Dataplane) conn() (*nftables.Conn, error) { return conn(d.opts.NetNS) }

// ensure creates the table and chains if missing (add is idempotent).
func (d *Dataplane) ensure() error {
	c, err := d.conn()
	if err != nil {
		return err
	}
	c.AddTable(d.t)
	for _, ch := range chains(d.t) {
		c.AddChain(ch)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("create table inet %s: %w", TableName, err)
	}
	return nil
}

// Info implements lb.Dataplane.
func (d *Dataplane) Info() lb.Info {
	return lb.Info{Mode: "nftables", Reason: d.opts.Reason, MaxBackendID: MaxBackendID}
}

// rule is one of our rules as read back.
type rule struct {
	r   *nftables.Rule
	vip vipTag
	be  backendTag
}

// snapshot is our table as the kernel holds it.
type snapshot struct {
	tableOK bool
	rules   map[string][]rule // by chain
	sets    map[string]bool
}

func (d *Dataplane) read(c *nftables.Conn) (snapshot, error) {
	s := snapshot{rules: map[string][]rule{}, sets: map[string]bool{}}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return s, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range ts {
		s.tableOK = s.tableOK || t.Name == TableName
	}
	if !s.tableOK {
		return s, nil
	}
	chs, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return s, fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chs {
		if ch.Table.Name != TableName {
			continue
		}
		rs, err := c.GetRules(d.t, ch)
		if err != nil {
			return s, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		list := []rule{}
		for _, r := range rs {
			v, b, _, ok := parseTag(ruleComment(r))
			if !ok {
				continue
			}
			list = append(list, rule{r: r, vip: v, be: b})
		}
		s.rules[ch.Name] = list
	}
	sets, err := c.GetSets(d.t)
	if err != nil {
		return s, fmt.Errorf("list sets: %w", err)
	}
	for _, st := range sets {
		s.sets[st.Name] = true
	}
	return s, nil
}

// held is what a snapshot holds whole: a VIP is held if its three rules and its ring are
// present; a backend if both its rules are.
func (s snapshot) held() (map[lb.VIPKey]vipTag, map[uint32]netip.Addr) {
	vips := map[lb.VIPKey]vipTag{}
	parts := map[lb.VIPKey]int{}
	for _, ch := range []string{chainCount, chainDNAT} {
		for _, r := range s.rules[ch] {
			if r.vip.Kind == "" {
				continue
			}
			parts[r.vip.Key]++
			if r.vip.Kind == "vip" {
				vips[r.vip.Key] = r.vip
			}
		}
	}
	for k, t := range vips {
		if parts[k] != 3 || !s.sets[t.Ring] || !s.chainsOK() {
			delete(vips, k)
		}
	}
	bes := map[uint32]netip.Addr{}
	bparts := map[uint32]int{}
	for _, ch := range []string{chainFwd, chainSNAT} {
		for _, r := range s.rules[ch] {
			if r.be.Kind == "" {
				continue
			}
			bparts[r.be.ID]++
			bes[r.be.ID] = r.be.Addr
		}
	}
	for id := range bes {
		if bparts[id] != 2 {
			delete(bes, id)
		}
	}
	return vips, bes
}

func (s snapshot) chainsOK() bool {
	for _, ch := range []string{chainCount, chainDNAT, chainFwd, chainSNAT} {
		if _, ok := s.rules[ch]; !ok {
			return false
		}
	}
	return true
}

// Programmed implements lb.Programmer. What this process wrote and no longer finds was
// removed by someone else: it is counted (rules_restored) and reported missing, so the
// controller writes it again.
func (d *Dataplane) Programmed() (lb.Programmed, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := lb.Programmed{VIPs: map[lb.VIPKey]lb.ProgrammedVIP{}, Backends: map[uint32]netip.Addr{}}
	c, err := d.conn()
	if err != nil {
		return p, err
	}
	s, err := d.read(c)
	if err != nil {
		return p, err
	}
	vips, bes := s.held()
	for k, t := range vips {
		p.VIPs[k] = lb.ProgrammedVIP{ID: t.ID, Flags: t.Flags, Ready: true}
	}
	p.Backends = bes
	d.noteLost(vips, bes)
	return p, nil
}

func (d *Dataplane) noteLost(vips map[lb.VIPKey]vipTag, bes map[uint32]netip.Addr) bool {
	lost := false
	for k := range d.writtenVIPs {
		if _, ok := vips[k]; !ok {
			d.log.Warn("rules of a vip were removed by someone else; restoring", "vip", k.String())
			delete(d.writtenVIPs, k)
			d.restored++
			lost = true
		}
	}
	for id := range d.writtenBackends {
		if _, ok := bes[id]; !ok {
			d.log.Warn("rules of a backend were removed by someone else; restoring", "backend_id", id)
			delete(d.writtenBackends, id)
			d.restored++
			lost = true
		}
	}
	return lost
}

// Watch checks every CheckInterval that what this process wrote is still there and calls
// kick (the controller's Kick) when something was removed, until ctx is done.
func (d *Dataplane) Watch(ctx context.Context, kick func()) error {
	tk := time.NewTicker(d.opts.CheckInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		d.mu.Lock()
		lost := false
		if c, err := d.conn(); err == nil {
			if s, err := d.read(c); err == nil {
				vips, bes := s.held()
				lost = d.noteLost(vips, bes)
			}
		}
		d.mu.Unlock()
		if lost {
			kick()
		}
	}
}

// SetVIP implements lb.Programmer: backend rules, then a new ring filled whole, then the
// VIP's rules switched to it in one transaction, then the old ring deleted.
func (d *Dataplane) SetVIP(v lb.VIP) error {
	if err := v.Validate(); err != nil {
		return err
	}
	addrs := map[uint32]netip.Addr{}
	for _, b := range v.Backends {
		if is6(b.Addr) != is6(v.Key.Addr) {
			return fmt.Errorf("vip %s: backend %s: %w", v.Key, b.Addr, ErrFamily)
		}
		if b.ID > MaxBackendID {
			return fmt.Errorf("vip %s: backend id %d above %d", v.Key, b.ID, MaxBackendID)
		}
		addrs[b.ID] = b.Addr.Unmap()
	}
	size := cmp.Or(v.RingSize, d.opts.RingSize) // the VIP's own ring size, as in XDP
	ring, err := lb.MaglevTable(v.Backends, size)
	if err != nil {
		return err
	}
	key := lb.VIPKey{Addr: v.Key.Addr.Unmap(), Port: v.Key.Port, Proto: v.Key.Proto}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.conn()
	if err != nil {
		return err
	}
	s, err := d.read(c)
	if err != nil {
		return err
	}
	if !s.tableOK || !s.chainsOK() {
		if err := d.ensure(); err != nil {
			return err
		}
		if s, err = d.read(c); err != nil {
			return err
		}
	}
	// Backends first.
	_, bes := s.held()
	for _, b := range v.Backends {
		if bes[b.ID] == addrs[b.ID] {
			continue
		}
		d.delBackendRules(c, s, b.ID)
		fwd, snat := backendRules(d.t, b.ID, addrs[b.ID])
		c.AddRule(fwd)
		c.AddRule(snat)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("vip %s: write backend rules: %w", v.Key, err)
	}
	for _, b := range v.Backends {
		d.writtenBackends[b.ID] = true
	}
	// The VIP's id and the next ring generation.
	var old *rule
	used := map[uint32]bool{}
	for i, r := range s.rules[chainDNAT] {
		if r.vip.Kind != "vip" {
			continue
		}
		used[r.vip.ID] = true
		if r.vip.Key == key {
			old = &s.rules[chainDNAT][i]
		}
	}
	var id, gen uint32
	if old != nil {
		id = old.vip.ID
	} else {
		for used[id] {
			id++
		}
	}
	var oldRings []string
	for name := range s.sets {
		if rid, g, ok := parseRingName(name); ok && rid == id {
			oldRings = append(oldRings, name)
			gen = max(gen, g+1)
		}
	}
	// The new ring, created, filled and swapped in for the old one in one transaction
	// where the send buffer holds it whole; else filled in steps while nothing refers to
	// it, then swapped in.
	rs := ringSet(d.t, ringName(id, gen), is6(key.Addr))
	els := ringElements(ring, addrs)
	count, dnat, drop := vipRules(d.t, vipTag{Key: key, ID: id, Flags: v.Flags, Ring: rs.Name}, rs, size)
	swap := func() {
		d.putRule(c, s, chainCount, key, "count", count)
		d.putRule(c, s, chainDNAT, key, "vip", dnat)
		d.putRule(c, s, chainDNAT, key, "nobackend", drop)
		// The old ring goes in the same transaction: the rules that named it are
		// deleted before it.
		for _, name := range oldRings {
			c.DelSet(&nftables.Set{Table: d.t, Name: name})
		}
	}
	if err := c.AddSet(rs, nil); err != nil {
		return err
	}
	for rest := els; len(rest) > 0; rest = rest[min(len(rest), elementsPerMessage):] {
		if err := c.SetAddElements(rs, rest[:min(len(rest), elementsPerMessage)]); err != nil {
			return err
		}
	}
	swap()
	err = c.Flush()
	if errors.Is(err, unix.EMSGSIZE) {
		err = d.swapInSteps(c, rs, els, swap)
	}
	if err != nil {
		return fmt.Errorf("vip %s: write ring and rules: %w", v.Key, err)
	}
	d.writtenVIPs[key] = true
	return nil
}

// swapInSteps writes a ring in batches the socket's send buffer holds, then swaps it in.
func (d *Dataplane) swapInSteps(c *nftables.Conn, rs *nftables.Set, els []nftables.SetElement, swap func()) error {
	if err := c.AddSet(rs, nil); err != nil {
		return err
	}
	for i := 0; len(els) > 0; i++ {
		n := min(len(els), elementsPerMessage)
		if err := c.SetAddElements(rs, els[:n]); err != nil {
			return err
		}
		els = els[n:]
		if (i+1)%messagesPerBatch == 0 {
			if err := c.Flush(); err != nil {
				return fmt.Errorf("fill ring: %w", err)
			}
		}
	}
	swap()
	return c.Flush()
}

// putRule swaps the VIP's rule of that kind: the old one deleted and the new one
// appended in the same transaction (the nobackend rule is put after the dnat rule, so it
// stays behind it). Deleting and adding rather than replacing in place: google/nftables
// misreads the kernel's answers to a batch of in-place replacements.
func (d *Dataplane) putRule(c *nftables.Conn, s snapshot, chain string, key lb.VIPKey, kind string, r *nftables.Rule) {
	for _, o := range s.rules[chain] {
		if o.vip.Kind == kind && o.vip.Key == key {
			_ = c.DelRule(o.r)
		}
	}
	c.AddRule(r)
}

func (d *Dataplane) delBackendRules(c *nftables.Conn, s snapshot, id uint32) {
	for _, ch := range []string{chainFwd, chainSNAT} {
		for _, r := range s.rules[ch] {
			if r.be.Kind != "" && r.be.ID == id {
				_ = c.DelRule(r.r)
			}
		}
	}
}

// DeleteVIP implements lb.Programmer: its rules, then its ring.
func (d *Dataplane) DeleteVIP(k lb.VIPKey) error {
	key := lb.VIPKey{Addr: k.Addr.Unmap(), Port: k.Port, Proto: k.Proto}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.conn()
	if err != nil {
		return err
	}
	s, err := d.read(c)
	if err != nil {
		return err
	}
	var id uint32
	found := false
	for _, ch := range []string{chainCount, chainDNAT} {
		for _, r := range s.rules[ch] {
			if r.vip.Kind == "" {
				continue
			}
			if r.vip.Key == key {
				found, id = true, r.vip.ID
				_ = c.DelRule(r.r)
			}
		}
	}
	if !found {
		return fmt.Errorf("delete vip %s: not found", k)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete vip %s: %w", k, err)
	}
	delete(d.writtenVIPs, key)
	for name := range s.sets {
		if rid, _, ok := parseRingName(name); ok && rid == id {
			c.DelSet(&nftables.Set{Table: d.t, Name: name})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete ring of vip %s: %w", k, err)
	}
	return nil
}

// DeleteBackend implements lb.Programmer.
func (d *Dataplane) DeleteBackend(id uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.conn()
	if err != nil {
		return err
	}
	s, err := d.read(c)
	if err != nil {
		return err
	}
	d.delBackendRules(c, s, id)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete backend %d: %w", id, err)
	}
	delete(d.writtenBackends, id)
	return nil
}

// SetForwarding implements lb.Dataplane: NAT needs none of XDP's settings.
func (d *Dataplane) SetForwarding(lb.Forwarding) error { return nil }

// Attach implements lb.Dataplane. The rules match on every interface; the node must
// forward (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding), which Attach checks.
func (d *Dataplane) Attach(_ context.Context, ifaces []string) (map[string]string, error) {
	// A netns given by fd is the caller's to check.
	if d.opts.NetNS == 0 {
		if err := lb.CheckForwarding(); err != nil {
			return nil, err
		}
	}
	m := map[string]string{}
	for _, i := range ifaces {
		m[i] = "nftables"
	}
	return m, nil
}

// Detach implements lb.Dataplane: the rules stay until Unpin, like XDP's pinned links.
func (d *Dataplane) Detach(context.Context) error { return nil }

// Counters implements lb.Dataplane: packets and bytes from the counting rules, new flows
// from the DNAT and masquerade rules' counters (NAT chains see a flow's first packet).
func (d *Dataplane) Counters() (lb.Counters, error) {
	cs := lb.Counters{VIPs: map[lb.VIPKey]lb.TrafficCounters{}, Backends: map[uint32]lb.TrafficCounters{}, Global: map[string]uint64{}}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.conn()
	if err != nil {
		return cs, err
	}
	s, err := d.read(c)
	if err != nil {
		return cs, err
	}
	var noBackend uint64
	for _, ch := range []string{chainCount, chainDNAT, chainFwd, chainSNAT} {
		for _, r := range s.rules[ch] {
			n := counterOf(r.r)
			switch {
			case r.vip.Kind == "count":
				t := cs.VIPs[r.vip.Key]
				t.Packets, t.Bytes = n.Packets, n.Bytes
				cs.VIPs[r.vip.Key] = t
			case r.vip.Kind == "vip":
				t := cs.VIPs[r.vip.Key]
				t.NewFlows = n.Packets
				cs.VIPs[r.vip.Key] = t
			case r.vip.Kind == "nobackend":
				noBackend += n.Packets
			case r.be.Kind == "bcount":
				t := cs.Backends[r.be.ID]
				t.Packets, t.Bytes = n.Packets, n.Bytes
				cs.Backends[r.be.ID] = t
			case r.be.Kind == "backend":
				t := cs.Backends[r.be.ID]
				t.NewFlows = n.Packets
				cs.Backends[r.be.ID] = t
			}
		}
	}
	cs.Global[CounterRestored] = d.restored
	cs.Global[CounterNoBackend] = noBackend
	return cs, nil
}

func counterOf(r *nftables.Rule) expr.Counter {
	for _, e := range r.Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return *c
		}
	}
	return expr.Counter{}
}

// Close implements lb.Dataplane.
func (d *Dataplane) Close() error { return nil }

// Unpin implements lb.Dataplane: removes l4lb's table and everything in it.
func (d *Dataplane) Unpin() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writtenVIPs, d.writtenBackends = map[lb.VIPKey]bool{}, map[uint32]bool{}
	_, err := Remove(d.opts.NetNS)
	return err
}

// Remove deletes l4lb's table if present (l4lb cleanup) and says what it removed.
func Remove(netns int) ([]string, error) {
	c, err := conn(netns)
	if err != nil {
		return nil, err
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		if errors.Is(err, unix.EPROTONOSUPPORT) {
			return nil, nil
		}
		return nil, fmt.Errorf("list tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == TableName {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return nil, fmt.Errorf("delete table inet %s: %w", TableName, err)
			}
			return []string{"nftables table inet " + TableName}, nil
		}
	}
	return nil, nil
}

// VIPKeys lists the VIPs whose rules are present, sorted (tests, tools).
func (d *Dataplane) VIPKeys() ([]lb.VIPKey, error) {
	p, err := d.Programmed()
	if err != nil {
		return nil, err
	}
	var ks []lb.VIPKey
	for k := range p.VIPs {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return ks[i].String() < ks[j].String() })
	return slices.Clip(ks), nil
}
