// Package iptables is the iptables data plane: kube-proxy style DNAT chains with
// statistic-mode backend choice, written with iptables-restore --noflush in chains of
// its own (L4LB-*).
package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/l4lb/l4lb/pkg/lb"
)

// Sentinel errors.
var (
	ErrFamily     = errors.New("nat cannot translate between ipv4 and ipv6")
	ErrNoIPTables = errors.New("iptables unavailable")
)

// Global counter names (as the nftables data plane's).
const (
	CounterRestored  = "rules_restored"
	CounterNoBackend = "drop_no_backend"
)

// MaxBackendID is the largest backend id (ids only name rules here).
const MaxBackendID = 1<<24 - 1

// Options configure the data plane.
type Options struct {
	// Exec prefixes every iptables command (tests: ip netns exec NAME).
	Exec   []string
	Reason string
	Logger *slog.Logger
	// CheckInterval is how often Watch looks for removed rules (default 2s).
	CheckInterval time.Duration
}

// Dataplane is the iptables data plane; it implements lb.Dataplane.
type Dataplane struct {
	mu   sync.Mutex
	opts Options
	log  *slog.Logger
	// The desired state this process writes, whole, on every change.
	vips     map[lb.VIPKey]vipEntry
	backends map[uint32]netip.Addr
	// written: what this process wrote and believes present.
	written  bool
	restored uint64
}

type vipEntry struct {
	id  uint32
	vip lb.VIP
}

var _ lb.Dataplane = (*Dataplane)(nil)

// New checks that iptables-restore works here and adopts what a previous run wrote.
func New(opts Options) (*Dataplane, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CheckInterval == 0 {
		opts.CheckInterval = 2 * time.Second
	}
	d := &Dataplane{opts: opts, log: opts.Logger.With("component", "iptables"),
		vips: map[lb.VIPKey]vipEntry{}, backends: map[uint32]netip.Addr{}}
	for _, fam := range families {
		if _, err := d.run(fam.save, nil, "-t", "nat"); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoIPTables, err)
		}
	}
	s, err := d.read()
	if err != nil {
		return nil, err
	}
	for k, v := range s.vips {
		d.vips[k] = v
	}
	for id, a := range s.backends {
		d.backends[id] = a
	}
	d.written = len(s.vips) > 0
	return d, nil
}

type family struct {
	name          string
	save, restore string
	six           bool
}

var families = []family{
	{"ipv4", "iptables-save", "iptables-restore", false},
	{"ipv6", "ip6tables-save", "ip6tables-restore", true},
}

func (d *Dataplane) run(cmd string, stdin []byte, args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, d.opts.Exec...), cmd), args...)
	c := exec.Command(argv[0], argv[1:]...)
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Info implements lb.Dataplane.
func (d *Dataplane) Info() lb.Info {
	return lb.Info{Mode: "iptables", Reason: d.opts.Reason, MaxBackendID: MaxBackendID}
}

// apply writes the whole desired state (every family, every table) keeping counters.
func (d *Dataplane) apply() error {
	s, err := d.read()
	if err != nil {
		return err
	}
	for _, fam := range families {
		in := render(fam.six, d.vips, d.backends, s)
		if _, err := d.run(fam.restore, []byte(in), "--noflush", "--counters", "-w"); err != nil {
			return fmt.Errorf("%s: %w", fam.restore, err)
		}
	}
	d.written = true
	return nil
}

// Programmed implements lb.Programmer from what iptables-save shows.
func (d *Dataplane) Programmed() (lb.Programmed, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := lb.Programmed{VIPs: map[lb.VIPKey]lb.ProgrammedVIP{}, Backends: map[uint32]netip.Addr{}}
	s, err := d.read()
	if err != nil {
		return p, err
	}
	for k, v := range s.vips {
		if s.ready[k] {
			p.VIPs[k] = lb.ProgrammedVIP{ID: v.id, Flags: v.vip.Flags, Ready: true}
		}
	}
	for id, a := range s.backends {
		p.Backends[id] = a
	}
	d.noteLost(p)
	return p, nil
}

// noteLost counts (once) that what this process wrote is no longer all there.
func (d *Dataplane) noteLost(p lb.Programmed) bool {
	if !d.written {
		return false
	}
	lost := false
	for k := range d.vips {
		if _, ok := p.VIPs[k]; !ok {
			lost = true
		}
	}
	for id := range d.backends {
		if _, ok := p.Backends[id]; !ok {
			lost = true
		}
	}
	if lost {
		d.log.Warn("l4lb's iptables rules were removed by someone else; restoring")
		d.restored++
		d.written = false
	}
	return lost
}

// Watch checks every CheckInterval that the rules are all there; when some were removed
// it counts it and calls kick.
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
		if s, err := d.read(); err == nil {
			p := lb.Programmed{VIPs: map[lb.VIPKey]lb.ProgrammedVIP{}, Backends: s.backends}
			for k := range s.vips {
				if s.ready[k] {
					p.VIPs[k] = lb.ProgrammedVIP{}
				}
			}
			lost = d.noteLost(p)
		}
		d.mu.Unlock()
		if lost {
			kick()
		}
	}
}

// SetVIP implements lb.Programmer. The VIP's chain is rewritten whole in one
// iptables-restore transaction per family.
func (d *Dataplane) SetVIP(v lb.VIP) error {
	if err := v.Validate(); err != nil {
		return err
	}
	key := lb.VIPKey{Addr: v.Key.Addr.Unmap(), Port: v.Key.Port, Proto: v.Key.Proto}
	v.Key = key
	bs := make([]lb.Backend, len(v.Backends))
	for i, b := range v.Backends {
		if b.Addr.Unmap().Is6() != key.Addr.Is6() {
			return fmt.Errorf("vip %s: backend %s: %w", key, b.Addr, ErrFamily)
		}
		if b.ID > MaxBackendID {
			return fmt.Errorf("vip %s: backend id %d above %d", key, b.ID, MaxBackendID)
		}
		b.Addr = b.Addr.Unmap()
		bs[i] = b
	}
	v.Backends = bs
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.vips[key]
	if !ok {
		used := map[uint32]bool{}
		for _, o := range d.vips {
			used[o.id] = true
		}
		for used[e.id] {
			e.id++
		}
	}
	e.vip = v
	prevVIP, prevBackends := d.vips[key], clone(d.backends)
	d.vips[key] = e
	for _, b := range v.Backends {
		d.backends[b.ID] = b.Addr
	}
	if err := d.apply(); err != nil {
		// A rejected change changes nothing: back to what was written.
		if ok {
			d.vips[key] = prevVIP
		} else {
			delete(d.vips, key)
		}
		d.backends = prevBackends
		return err
	}
	return nil
}

func clone(m map[uint32]netip.Addr) map[uint32]netip.Addr {
	c := make(map[uint32]netip.Addr, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// DeleteVIP implements lb.Programmer.
func (d *Dataplane) DeleteVIP(k lb.VIPKey) error {
	key := lb.VIPKey{Addr: k.Addr.Unmap(), Port: k.Port, Proto: k.Proto}
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.vips[key]
	if !ok {
		return fmt.Errorf("delete vip %s: not found", k)
	}
	delete(d.vips, key)
	if err := d.apply(); err != nil {
		d.vips[key] = e
		return err
	}
	return nil
}

// DeleteBackend implements lb.Programmer.
func (d *Dataplane) DeleteBackend(id uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	a, ok := d.backends[id]
	if !ok {
		return nil
	}
	delete(d.backends, id)
	if err := d.apply(); err != nil {
		d.backends[id] = a
		return err
	}
	return nil
}

// SetForwarding implements lb.Dataplane: nothing applies to NAT.
func (d *Dataplane) SetForwarding(lb.Forwarding) error { return nil }

// Attach implements lb.Dataplane: rules match on every interface.
func (d *Dataplane) Attach(_ context.Context, ifaces []string) (map[string]string, error) {
	if len(d.opts.Exec) == 0 {
		if err := lb.CheckForwarding(); err != nil {
			return nil, err
		}
	}
	m := map[string]string{}
	for _, i := range ifaces {
		m[i] = "iptables"
	}
	return m, nil
}

// Detach implements lb.Dataplane: the rules stay until Unpin.
func (d *Dataplane) Detach(context.Context) error { return nil }

// Counters implements lb.Dataplane from the rules' counters: packets and bytes from the
// mangle and filter counting rules, new flows from the nat rules.
func (d *Dataplane) Counters() (lb.Counters, error) {
	cs := lb.Counters{VIPs: map[lb.VIPKey]lb.TrafficCounters{}, Backends: map[uint32]lb.TrafficCounters{}, Global: map[string]uint64{}}
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.read()
	if err != nil {
		return cs, err
	}
	for k, e := range s.vips {
		t := cs.VIPs[k]
		c := s.counters[tagVIPCount(e.id)]
		t.Packets, t.Bytes = c.packets, c.bytes
		t.NewFlows = s.counters[tagDispatch(k, e)].packets
		cs.VIPs[k] = t
		for _, b := range e.vip.Backends {
			bt := cs.Backends[b.ID]
			bt.NewFlows += s.counters[tagDNAT(e.id, b)].packets + s.counters[tagAffinity(e.id, b)].packets
			cs.Backends[b.ID] = bt
		}
		cs.Global[CounterNoBackend] += s.counters[tagNoBackend(e.id)].packets
	}
	for id, a := range s.backends {
		bt := cs.Backends[id]
		c := s.counters[tagBackendCount(id, a)]
		bt.Packets, bt.Bytes = c.packets, c.bytes
		cs.Backends[id] = bt
	}
	cs.Global[CounterRestored] = d.restored
	return cs, nil
}

// Close implements lb.Dataplane.
func (d *Dataplane) Close() error { return nil }

// Unpin implements lb.Dataplane: removes every L4LB chain and the jumps to them.
func (d *Dataplane) Unpin() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.vips, d.backends, d.written = map[lb.VIPKey]vipEntry{}, map[uint32]netip.Addr{}, false
	_, err := remove(d.opts.Exec)
	return err
}

// Remove deletes l4lb's chains and jumps, if any (l4lb cleanup).
func Remove() ([]string, error) { return remove(nil) }

func remove(prefix []string) ([]string, error) {
	d := &Dataplane{opts: Options{Exec: prefix}}
	var removed []string
	var errs []error
	for _, fam := range families {
		if _, err := exec.LookPath(fam.save); err != nil && len(prefix) == 0 {
			continue
		}
		out, err := d.run(fam.save, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		in, what := renderRemove(string(out))
		if len(what) == 0 {
			continue
		}
		if _, err := d.run(fam.restore, []byte(in), "--noflush", "-w"); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, w := range what {
			removed = append(removed, fam.name+" "+w)
		}
	}
	sort.Strings(removed)
	return removed, errors.Join(errs...)
}

// renderRemove turns iptables-save output into the restore input that deletes every
// jump to an L4LB chain and then the chains, table by table.
func renderRemove(save string) (string, []string) {
	var b strings.Builder
	var what []string
	var table string
	var jumps, chains []string
	flush := func() {
		if len(jumps)+len(chains) == 0 {
			return
		}
		fmt.Fprintf(&b, "*%s\n", table)
		for _, j := range jumps {
			fmt.Fprintf(&b, "-D%s\n", j)
		}
		for _, c := range chains {
			fmt.Fprintf(&b, "-F %s\n", c)
		}
		for _, c := range chains {
			fmt.Fprintf(&b, "-X %s\n", c)
			what = append(what, table+" "+c)
		}
		b.WriteString("COMMIT\n")
	}
	for _, line := range strings.Split(save, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table, jumps, chains = line[1:], nil, nil
		case strings.HasPrefix(line, ":"+chainPrefix):
			chains = append(chains, strings.Fields(line[1:])[0])
		case strings.HasPrefix(line, "-A ") && strings.Contains(line, "-j "+chainPrefix) && !strings.HasPrefix(line, "-A "+chainPrefix):
			jumps = append(jumps, strings.TrimPrefix(line, "-A"))
		case line == "COMMIT":
			flush()
		}
	}
	return b.String(), what
}

func atou(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}
