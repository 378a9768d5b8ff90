package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
)

// The prefilter's daemon side: the configured deny list (prefilter.deny and deny_files)
// plus the prefixes added at run time (admin API, `l4lb deny`), which are kept in the
// state file; and each VIP's allow list and guard. The data plane's deny list is made
// equal to configured + run-time at start; a reload applies the difference between the
// old and the new configured prefixes, so run-time ones stay.

// prefilterPlan is a configuration's prefilter, with its files read.
type prefilterPlan struct {
	deny     map[netip.Prefix]bool
	policies map[lb.VIPKey]lb.Policy
	any      bool // the configuration asks for a prefilter at all
}

// planPrefilter reads a validated configuration's prefilter (deny files included).
func planPrefilter(cfg *config.Config) (*prefilterPlan, error) {
	p := &prefilterPlan{deny: map[netip.Prefix]bool{}, policies: map[lb.VIPKey]lb.Policy{}}
	for _, s := range cfg.Prefilter.Deny {
		pfx, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("prefilter.deny: %w", err)
		}
		p.deny[pfx] = true
	}
	for _, name := range cfg.Prefilter.DenyFiles {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("prefilter.deny_files: %w", err)
		}
		list, err := config.ReadPrefixes(name, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("prefilter.deny_files: %w", err)
		}
		for _, pfx := range list {
			p.deny[pfx] = true
		}
	}
	p.any = len(p.deny) > 0
	for _, v := range cfg.VIPs {
		addr, err := netip.ParseAddr(v.Address)
		if err != nil {
			return nil, fmt.Errorf("vip %s: %w", v.Name, err)
		}
		proto, err := lb.ParseProto(v.Protocol)
		if err != nil {
			return nil, fmt.Errorf("vip %s: %w", v.Name, err)
		}
		var pol lb.Policy
		for _, s := range v.Allow {
			pfx, err := config.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("vip %s allow: %w", v.Name, err)
			}
			pol.Allow = append(pol.Allow, pfx)
		}
		if v.Guard != nil {
			pol.GuardRate, pol.GuardDropRate = v.Guard.Rate, v.Guard.DropRate
		}
		if len(pol.Allow) > 0 || pol.GuardRate != 0 || pol.GuardDropRate != 0 {
			p.any = true
		}
		p.policies[lb.VIPKey{Addr: addr.Unmap(), Port: uint16(v.Port), Proto: proto}] = pol
	}
	return p, nil
}

// prefilterState is the daemon's prefilter bookkeeping.
type prefilterState struct {
	mu       sync.Mutex
	plan     *prefilterPlan
	runtime  map[netip.Prefix]bool // added through the admin API; in the state file
	policies map[lb.VIPKey]bool    // VIPs given a policy (to clear when they leave the config)
}

var errNoPrefilter = errors.New("the data plane has no prefilter")

// setPolicies gives each VIP of the plan its policy and clears it from the VIPs that had
// one and are no longer in the plan; on success st.policies is the plan's. The caller
// holds st.mu.
func (st *prefilterState) setPolicies(pf lb.Prefilter, plan *prefilterPlan) error {
	for k, pol := range plan.policies {
		if err := pf.SetPolicy(k, pol); err != nil {
			return err
		}
	}
	for k := range st.policies {
		if _, ok := plan.policies[k]; !ok {
			if err := pf.SetPolicy(k, lb.Policy{}); err != nil {
				return err
			}
		}
	}
	st.policies = map[lb.VIPKey]bool{}
	for k := range plan.policies {
		st.policies[k] = true
	}
	return nil
}

func (d *Daemon) prefilter() (lb.Prefilter, error) {
	pf, ok := d.dp.(lb.Prefilter)
	if !ok {
		return nil, fmt.Errorf("%w (mode %s)", errNoPrefilter, d.dp.Info().Mode)
	}
	return pf, nil
}

// applyPrefilter makes the data plane's prefilter match plan and the run-time list (at
// start: entries a previous run left in the pinned list are removed).
func (d *Daemon) applyPrefilter(plan *prefilterPlan, runtime []netip.Prefix) error {
	pf, err := d.prefilter()
	if err != nil {
		if plan.any || len(runtime) > 0 {
			return err
		}
		return nil
	}
	st := &d.pf
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.runtime == nil {
		st.runtime = map[netip.Prefix]bool{}
		for _, p := range runtime {
			st.runtime[p] = true
		}
	}
	want := map[netip.Prefix]bool{}
	for p := range plan.deny {
		want[p] = true
	}
	for p := range st.runtime {
		want[p] = true
	}
	have, err := pf.DenyList()
	if err != nil {
		return err
	}
	var del []netip.Prefix
	for _, e := range have {
		if !want[e.Prefix] {
			del = append(del, e.Prefix)
		}
	}
	add := make([]netip.Prefix, 0, len(want))
	for p := range want {
		add = append(add, p)
	}
	if err := pf.DenyAdd(add); err != nil {
		return fmt.Errorf("deny list: %w", err)
	}
	if err := pf.DenyDelete(del); err != nil {
		return fmt.Errorf("deny list: %w", err)
	}
	if err := st.setPolicies(pf, plan); err != nil {
		return err
	}
	st.plan = plan
	if len(del) > 0 || len(add) > 0 {
		d.log.Info("prefilter applied", "deny_prefixes", len(want), "removed", len(del))
	}
	return nil
}

// reloadPrefilter applies a reload's prefilter: configured prefixes the new
// configuration adds are added, those it drops are removed (unless they were also added
// at run time), and the VIPs' policies are set. On a failure it puts back what it
// changed and returns the error, and the reload is rejected.
func (d *Daemon) reloadPrefilter(plan *prefilterPlan) error {
	pf, err := d.prefilter()
	if err != nil {
		if plan.any {
			return err
		}
		return nil
	}
	st := &d.pf
	st.mu.Lock()
	defer st.mu.Unlock()
	old := st.plan
	if old == nil {
		old = &prefilterPlan{deny: map[netip.Prefix]bool{}, policies: map[lb.VIPKey]lb.Policy{}}
	}
	add, del := map[netip.Prefix]bool{}, map[netip.Prefix]bool{}
	for p := range plan.deny {
		if !old.deny[p] && !st.runtime[p] {
			add[p] = true
		}
	}
	for p := range old.deny {
		if !plan.deny[p] && !st.runtime[p] {
			del[p] = true
		}
	}
	addList, delList := sortedPrefixes(add), sortedPrefixes(del)
	// Removals first: an addition that fails for want of room then has the room back to
	// undo them.
	if len(delList) > 0 {
		if err := pf.DenyDelete(delList); err != nil {
			_ = pf.DenyAdd(delList) // whatever was removed before the failure
			return fmt.Errorf("deny list: %w", err)
		}
	}
	// Nothing in addList was listed before (the list is configured + run-time), so
	// removing all of it also undoes an addition that failed half-way.
	undo := func() {
		if len(addList) > 0 {
			_ = pf.DenyDelete(addList)
		}
		if len(delList) > 0 {
			_ = pf.DenyAdd(delList)
		}
		for k := range plan.policies {
			_ = pf.SetPolicy(k, old.policies[k])
		}
		for k, pol := range old.policies {
			_ = pf.SetPolicy(k, pol)
		}
	}
	if len(addList) > 0 {
		if err := pf.DenyAdd(addList); err != nil {
			undo()
			return fmt.Errorf("deny list: %w", err)
		}
	}
	if err := st.setPolicies(pf, plan); err != nil {
		undo()
		return err
	}
	st.plan = plan
	if len(addList) > 0 || len(delList) > 0 {
		d.log.Info("prefilter reloaded", "deny_added", len(addList), "deny_removed", len(delList))
	}
	return nil
}

// DenyAdd implements admin.DenyNode: adds run-time deny prefixes, saved in the state
// file before the data plane changes (a failed save changes nothing). Without
// opts.Force, prefixes that cover a BGP peer, a backend or the requesting client are
// refused, and nothing is added.
func (d *Daemon) DenyAdd(prefixes []netip.Prefix, opts admin.DenyOptions) error {
	pf, err := d.prefilter()
	if err != nil {
		return fmt.Errorf("%w: %w", admin.ErrBadRequest, err)
	}
	if !opts.Force {
		if err := d.denyConflicts(prefixes, opts.Client); err != nil {
			return err
		}
	}
	st := &d.pf
	st.mu.Lock()
	defer st.mu.Unlock()
	next := copyPrefixSet(st.runtime)
	for _, p := range prefixes {
		next[p] = true
	}
	if err := saveDeny(d.stateFile(), sortedPrefixes(next)); err != nil {
		return err
	}
	if err := pf.DenyAdd(prefixes); err != nil {
		_ = saveDeny(d.stateFile(), sortedPrefixes(st.runtime))
		return err
	}
	st.runtime = next
	return nil
}

// denyConflicts refuses prefixes that cover an address of the running configuration's
// BGP peers and backends, or client, naming each prefix and what it covers.
func (d *Daemon) denyConflicts(prefixes []netip.Prefix, client netip.Addr) error {
	d.mu.Lock()
	addrs := config.ProtectedAddrs(d.cfg)
	d.mu.Unlock()
	if client.IsValid() {
		addrs = append(addrs, config.Protected{Addr: client, What: "the admin api's client " + client.String() + " (this request)"})
	}
	covers := config.DenyCovers(prefixes, addrs)
	if len(covers) == 0 {
		return nil
	}
	var msgs []string
	for _, p := range sortedPrefixes(keysOf(covers)) {
		msgs = append(msgs, fmt.Sprintf("%s covers %s", p, strings.Join(covers[p], ", ")))
	}
	return fmt.Errorf("%w: %s: the prefilter would drop their packets; nothing was added (force it with l4lb deny add --force, or \"force\": true)",
		admin.ErrConflict, strings.Join(msgs, "; "))
}

func keysOf[V any](m map[netip.Prefix]V) map[netip.Prefix]bool {
	out := make(map[netip.Prefix]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// DenyDelete implements admin.DenyNode: removes run-time prefixes. A prefix from the
// configuration is refused (remove it there), as is one not listed; either refusal
// changes nothing.
func (d *Daemon) DenyDelete(prefixes []netip.Prefix) error {
	pf, err := d.prefilter()
	if err != nil {
		return fmt.Errorf("%w: %w", admin.ErrBadRequest, err)
	}
	st := &d.pf
	st.mu.Lock()
	defer st.mu.Unlock()
	next := copyPrefixSet(st.runtime)
	for _, p := range prefixes {
		if st.plan != nil && st.plan.deny[p] {
			return fmt.Errorf("%w: %s is in the configuration (prefilter.deny or deny_files): remove it there and reload", admin.ErrBadRequest, p)
		}
		if !next[p] {
			return fmt.Errorf("%w: %s is not in the deny list", admin.ErrNotFound, p)
		}
		delete(next, p)
	}
	if err := saveDeny(d.stateFile(), sortedPrefixes(next)); err != nil {
		return err
	}
	if err := pf.DenyDelete(prefixes); err != nil {
		_ = saveDeny(d.stateFile(), sortedPrefixes(st.runtime))
		return err
	}
	st.runtime = next
	return nil
}

// DenyEntry is one prefix of `l4lb deny list`.
type DenyEntry struct {
	Prefix netip.Prefix `json:"prefix"`
	Drops  uint64       `json:"drops"`
	Source string       `json:"source"` // config or runtime
}

// DenyList implements admin.DenyNode.
func (d *Daemon) DenyList() (any, error) {
	pf, err := d.prefilter()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", admin.ErrBadRequest, err)
	}
	list, err := pf.DenyList()
	if err != nil {
		return nil, err
	}
	st := &d.pf
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]DenyEntry, len(list))
	for i, e := range list {
		src := "runtime"
		if st.plan != nil && st.plan.deny[e.Prefix] {
			src = "config"
		}
		out[i] = DenyEntry{Prefix: e.Prefix, Drops: e.Drops, Source: src}
	}
	return out, nil
}

func (d *Daemon) stateFile() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.StateFile
}

func copyPrefixSet(m map[netip.Prefix]bool) map[netip.Prefix]bool {
	out := make(map[netip.Prefix]bool, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedPrefixes(m map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// topDenyPrefixes is how many prefixes /metrics reports drops for (the busiest).
const topDenyPrefixes = 20

// prefilterCollector exports the busiest deny prefixes and the guard counters.
type prefilterCollector struct {
	d                                *Daemon
	prefixDrops                      *prometheus.Desc
	untracked, guardDrop, notAllowed *prometheus.Desc
}

func newPrefilterCollector(d *Daemon) *prefilterCollector {
	return &prefilterCollector{
		d:           d,
		prefixDrops: prometheus.NewDesc("l4lb_deny_prefix_drops_total", fmt.Sprintf("Packets dropped by a deny-list prefix (the %d busiest).", topDenyPrefixes), []string{"prefix"}, nil),
		untracked:   prometheus.NewDesc("l4lb_guard_untracked_flows_total", "New flows of a VIP forwarded without a conntrack entry because of the flood guard.", []string{"vip"}, nil),
		guardDrop:   prometheus.NewDesc("l4lb_guard_dropped_flows_total", "New flows of a VIP dropped above the guard's drop rate.", []string{"vip"}, nil),
		notAllowed:  prometheus.NewDesc("l4lb_allow_denied_packets_total", "Packets to a VIP from sources outside its allow list.", []string{"vip"}, nil),
	}
}

func (c *prefilterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.prefixDrops
	ch <- c.untracked
	ch <- c.guardDrop
	ch <- c.notAllowed
}

func (c *prefilterCollector) Collect(ch chan<- prometheus.Metric) {
	pf, err := c.d.prefilter()
	if err != nil {
		return
	}
	if list, err := pf.DenyList(); err == nil {
		sort.SliceStable(list, func(i, j int) bool { return list[i].Drops > list[j].Drops })
		for i, e := range list {
			if i == topDenyPrefixes || e.Drops == 0 {
				break
			}
			ch <- prometheus.MustNewConstMetric(c.prefixDrops, prometheus.CounterValue, float64(e.Drops), e.Prefix.String())
		}
	}
	counters, err := pf.PolicyCounters()
	if err != nil {
		return
	}
	names := map[lb.VIPKey]string{}
	c.d.mu.Lock()
	for _, v := range c.d.cfg.VIPs {
		if a, err := netip.ParseAddr(v.Address); err == nil {
			if p, err := lb.ParseProto(v.Protocol); err == nil {
				names[lb.VIPKey{Addr: a.Unmap(), Port: uint16(v.Port), Proto: p}] = v.Name
			}
		}
	}
	c.d.mu.Unlock()
	for k, n := range counters {
		name, ok := names[k]
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.untracked, prometheus.CounterValue, float64(n.Untracked), name)
		ch <- prometheus.MustNewConstMetric(c.guardDrop, prometheus.CounterValue, float64(n.Dropped), name)
		ch <- prometheus.MustNewConstMetric(c.notAllowed, prometheus.CounterValue, float64(n.Denied), name)
	}
}

// readState reads the state file; a missing file is an empty state.
func readState(path string) (stateFile, error) {
	var sf stateFile
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return sf, nil
	}
	if err != nil {
		return sf, fmt.Errorf("read state file: %w", err)
	}
	if err := json.Unmarshal(b, &sf); err != nil {
		return sf, fmt.Errorf("parse state file %s: %w", path, err)
	}
	return sf, nil
}

// loadDeny returns the run-time deny prefixes of the state file.
func loadDeny(path string) ([]netip.Prefix, error) {
	if path == "" {
		return nil, nil
	}
	sf, err := readState(path)
	return sf.Deny, err
}

// saveDeny replaces the state file's deny section, keeping the rest.
func saveDeny(path string, deny []netip.Prefix) error {
	if path == "" {
		return nil
	}
	return updateState(path, func(sf *stateFile) { sf.Deny = deny })
}
