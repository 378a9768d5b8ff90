package lb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// applyParallelism bounds the VIPs a pass writes at once.
const applyParallelism = 32

// ErrNoSpec: no pass runs before the first SetSpec.
var ErrNoSpec = errors.New("no configuration")

// Announcer is told which VIPs to announce (BGP). Announce is called after the VIPs it
// adds are programmed, and with the withdrawals before they are removed.
type Announcer interface {
	Announce(ctx context.Context, vips []VIPState) error
}

// ApplyResult is the outcome of one controller pass.
type ApplyResult struct {
	At       time.Time
	Duration time.Duration
	Err      error
	Changed  bool
	// Written is how many VIPs the pass wrote (SetVIP), Deleted how many it removed: a
	// health flip writes only the VIPs that list the backend.
	Written, Deleted int
}

// Snapshot is the controller's state at one moment: its inputs (spec, overrides, health)
// and what it last applied. Everything outside the controller reads these; nothing else
// holds a copy of its own.
type Snapshot struct {
	Spec      Spec
	Overrides Overrides
	Health    map[BackendKey]bool
	State     State // last applied
	Applied   bool  // a pass has succeeded
	Last      ApplyResult
}

// Controller owns the desired state (spec + overrides + health) and applies it to the
// data plane from one goroutine. Inputs only signal it; passes are coalesced, skipped when
// nothing changed, and retried with backoff when they fail.
type Controller struct {
	log      *slog.Logger
	dp       Programmer
	maxID    uint32
	announce Announcer
	onApply  func(ApplyResult)
	signal   chan struct{}

	// passMu serialises passes (Run's loop and Apply).
	passMu sync.Mutex

	mu        sync.Mutex
	spec      *Spec
	overrides Overrides
	health    map[BackendKey]bool
	checked   map[BackendKey]bool // backends with a health check (SetChecked); nil: all
	state     State               // last applied
	applied   bool
	// reannounce: the next pass calls the Announcer even if nothing else changed.
	reannounce bool
	last       ApplyResult
	// gen counts input changes; appliedGen is the gen the last successful pass started
	// from. applied is closed and replaced whenever appliedGen moves.
	gen, appliedGen uint64
	appliedCh       chan struct{}
	// freed: when each backend id was last deleted; an id is not handed out again for
	// idQuarantine after (AssignIDsAvoiding).
	freed        map[uint32]FreedID
	idQuarantine time.Duration
	now          func() time.Time
}

// DefaultIDQuarantine is how long a deleted backend id is not given to another address
// when the data plane's UDP timeout is not known: the default UDP timeout (30 s) and a
// grace period of as much.
const DefaultIDQuarantine = time.Minute

// SetIDQuarantine sets how long a deleted backend id is not given to another address: at
// least the data plane's UDP timeout and a grace period, so no idle entry and no ring
// read in flight still names it when it is.
func (c *Controller) SetIDQuarantine(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idQuarantine = d
}

// quarantined returns the ids deleted less than idQuarantine ago (and forgets older ones).
func (c *Controller) quarantined() map[uint32]FreedID {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[uint32]FreedID{}
	now := c.now()
	for id, f := range c.freed {
		if now.Sub(f.At) < c.idQuarantine {
			out[id] = f
		} else {
			delete(c.freed, id)
		}
	}
	return out
}

// NewController returns a controller; nothing runs until Run. maxID is the largest backend
// id the data plane holds (Info.MaxBackendID).
func NewController(logger *slog.Logger, dp Programmer, maxID uint32, announce Announcer, onApply func(ApplyResult)) *Controller {
	if onApply == nil {
		onApply = func(ApplyResult) {}
	}
	return &Controller{
		log: logger.With("component", "controller"), dp: dp, maxID: maxID, announce: announce, onApply: onApply,
		signal: make(chan struct{}, 1), overrides: Overrides{}, health: map[BackendKey]bool{},
		appliedCh: make(chan struct{}),
		freed:     map[uint32]FreedID{}, idQuarantine: DefaultIDQuarantine, now: time.Now,
	}
}

// changed records an input change (c.mu held) and returns its generation.
func (c *Controller) changed() uint64 {
	c.gen++
	c.kick()
	return c.gen
}

// WaitApplied waits until a pass that includes the input change of generation gen (as
// returned by UpdateOverride) has been applied, or ctx ends.
func (c *Controller) WaitApplied(ctx context.Context, gen uint64) error {
	for {
		c.mu.Lock()
		done, ch := c.appliedGen >= gen, c.appliedCh
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (c *Controller) kick() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// SetSpec replaces the configured services (already validated). Health known for
// backends the spec no longer lists is forgotten: a backend added back later starts
// healthy, as its new health check does.
func (c *Controller) SetSpec(spec Spec) {
	c.mu.Lock()
	c.spec = &spec
	for k := range c.health {
		if !spec.Has(k) {
			delete(c.health, k)
		}
	}
	c.changed()
	c.mu.Unlock()
}

// SetOverrides replaces the operators' overrides (at start, from the state file).
func (c *Controller) SetOverrides(ov Overrides) {
	c.mu.Lock()
	c.overrides = ov.Clone()
	c.changed()
	c.mu.Unlock()
}

// UpdateOverride changes the override of one configured backend. persist (may be nil)
// sees the new overrides first: when it fails, nothing changes. It returns the new
// override and the change's generation, for WaitApplied.
func (c *Controller) UpdateOverride(k BackendKey, f func(*Override), persist func(Overrides) error) (Override, uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.spec == nil || !c.spec.Has(k) {
		return Override{}, 0, fmt.Errorf("%s: %w", k, ErrNoBackend)
	}
	next := c.overrides.Clone()
	o := next[k]
	f(&o)
	if o == (Override{}) {
		delete(next, k)
	} else {
		next[k] = o
	}
	if persist != nil {
		if err := persist(next); err != nil {
			return Override{}, 0, err
		}
	}
	c.overrides = next
	return o, c.changed(), nil
}

// SetChecked names the backends that have a health check. A backend without one is up:
// the health known for any other backend is forgotten (one that was down when its check
// was removed comes back at its weight), and later reports for them, from a check that
// is stopping, are ignored. Until the first call every backend's reports count.
func (c *Controller) SetChecked(keys map[BackendKey]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checked = make(map[BackendKey]bool, len(keys))
	for k, v := range keys {
		if v {
			c.checked[k] = true
		}
	}
	forgot := false
	for k := range c.health {
		if !c.checked[k] {
			delete(c.health, k)
			forgot = true
		}
	}
	if forgot {
		c.changed()
	}
}

// SetHealth records a backend's health transition. A report for a backend the spec does
// not list, or that has no health check (SetChecked), is ignored: it comes from a check
// that was just removed.
func (c *Controller) SetHealth(k BackendKey, up bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.spec == nil || !c.spec.Has(k) || (c.checked != nil && !c.checked[k]) {
		return false
	}
	c.health[k] = up
	c.changed()
	return true
}

// Snapshot returns the controller's inputs and last applied state; the caller may keep it.
func (c *Controller) Snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Snapshot{Overrides: c.overrides.Clone(), Health: make(map[BackendKey]bool, len(c.health)),
		State: c.state, Applied: c.applied, Last: c.last}
	if c.spec != nil {
		s.Spec = *c.spec
	}
	for k, v := range c.health {
		s.Health[k] = v
	}
	return s
}

// Reannounce asks for a pass that calls the Announcer even when the data plane is in
// sync (the BGP speaker has just started).
func (c *Controller) Reannounce() {
	c.mu.Lock()
	c.reannounce = true
	c.mu.Unlock()
	c.kick()
}

// Kick asks for a pass (e.g. after the data plane was reloaded).
func (c *Controller) Kick() { c.kick() }

// Run applies the desired state until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.signal:
		case <-retry:
		}
		retry = nil
		res := c.Apply(ctx)
		if res.Err != nil {
			c.log.Warn("apply failed, will retry", "error", res.Err, "backoff", backoff)
			retry = time.After(backoff)
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
	}
}

// Apply runs one pass now (start-up, tests).
func (c *Controller) Apply(ctx context.Context) ApplyResult {
	c.passMu.Lock()
	res := c.pass(ctx)
	c.passMu.Unlock()
	c.onApply(res)
	return res
}

func (c *Controller) pass(ctx context.Context) ApplyResult {
	start := time.Now()
	c.mu.Lock()
	if c.spec == nil {
		c.mu.Unlock()
		return ApplyResult{At: start, Err: ErrNoSpec}
	}
	spec, ov, gen := *c.spec, c.overrides, c.gen
	health := make(map[BackendKey]bool, len(c.health))
	for k, v := range c.health {
		health[k] = v
	}
	prev, applied, reannounce := c.state, c.applied, c.reannounce
	c.mu.Unlock()
	res := ApplyResult{At: start}
	st, changed, err := c.apply(ctx, spec, ov, health, prev, applied, reannounce, &res)
	res.Duration, res.Err, res.Changed = time.Since(start), err, changed
	c.mu.Lock()
	if err == nil {
		c.state, c.applied = st, true
		if reannounce {
			c.reannounce = false
		}
		if gen > c.appliedGen {
			c.appliedGen = gen
			close(c.appliedCh)
			c.appliedCh = make(chan struct{})
		}
	}
	c.last = res
	c.mu.Unlock()
	if changed && err == nil {
		c.log.Info("applied", "vips", len(st.VIPs), "vips_written", res.Written, "vips_deleted", res.Deleted, "duration", res.Duration)
	}
	return res
}

func (c *Controller) apply(ctx context.Context, spec Spec, ov Overrides, health map[BackendKey]bool, prev State, applied, reannounce bool, res *ApplyResult) (State, bool, error) {
	have, err := c.dp.Programmed()
	if err != nil {
		return State{}, false, err
	}
	byAddr := make(map[netip.Addr]uint32, len(have.Backends))
	held := make(map[uint32]bool, len(have.Backends))
	for id, a := range have.Backends {
		byAddr[a] = id
		held[id] = true
	}
	// A backend entry lost behind our back gets its old id again, if still free, so
	// conntrack entries that name it stay valid.
	for _, v := range prev.VIPs {
		for _, b := range v.VIP.Backends {
			if _, ok := byAddr[b.Addr]; !ok && !held[b.ID] {
				byAddr[b.Addr] = b.ID
				held[b.ID] = true
			}
		}
	}
	ids, err := AssignIDsAvoiding(byAddr, spec.Addrs(), c.maxID, c.quarantined())
	if err != nil {
		return State{}, false, err
	}
	want, err := Desired(spec, ov, health, ids)
	if err != nil {
		return State{}, false, err
	}
	// In sync only if what we last applied is what we want and the data plane holds it:
	// every VIP with its ring, and exactly the backends the VIPs list.
	if applied && reflect.DeepEqual(prev, want) && have.InSync(want) {
		if reannounce && c.announce != nil {
			if err := c.announce.Announce(ctx, want.VIPs); err != nil {
				return want, false, fmt.Errorf("announce: %w", err)
			}
		}
		return want, false, nil
	}

	wantKeys := make(map[VIPKey]bool, len(want.VIPs))
	wantIDs := map[uint32]netip.Addr{}
	for _, v := range want.VIPs {
		wantKeys[v.VIP.Key] = true
		for _, b := range v.VIP.Backends {
			wantIDs[b.ID] = b.Addr
		}
	}
	// Removing: withdraw first, then the VIP and its ring; unused backends go last.
	var removed []VIPKey
	for k := range have.VIPs {
		if !wantKeys[k] {
			removed = append(removed, k)
		}
	}
	if len(removed) > 0 && c.announce != nil {
		if err := c.announce.Announce(ctx, keepOnly(prev.VIPs, wantKeys)); err != nil {
			return State{}, true, fmt.Errorf("withdraw: %w", err)
		}
	}
	for _, k := range removed {
		if err := c.dp.DeleteVIP(k); err != nil {
			return State{}, true, err
		}
		res.Deleted++
	}
	// Adding and changing: backends, the ring swapped whole, then the VIP (SetVIP does
	// them in that order). A VIP is rewritten when it changed or the data plane lost any
	// part of it: a health flip rewrites only the VIPs that list the backend. Changed VIPs
	// are written in parallel (their Maglev tables are built on every CPU).
	prevByKey := map[VIPKey]VIPState{}
	if applied {
		for _, v := range prev.VIPs {
			prevByKey[v.VIP.Key] = v
		}
	}
	g := new(errgroup.Group)
	g.SetLimit(applyParallelism)
	for _, v := range want.VIPs {
		if p, ok := prevByKey[v.VIP.Key]; ok && reflect.DeepEqual(p.VIP, v.VIP) && holds(have, v.VIP) {
			continue
		}
		res.Written++
		g.Go(func() error { return c.dp.SetVIP(v.VIP) })
	}
	if err := g.Wait(); err != nil {
		return State{}, true, err
	}
	// Backends no VIP lists any more. Their ids were not handed out in this pass
	// (AssignIDs), so no new ring names them.
	for id, a := range have.Backends {
		if wa, ok := wantIDs[id]; !ok || wa != a {
			if err := c.dp.DeleteBackend(id); err != nil {
				return State{}, true, err
			}
			c.mu.Lock()
			c.freed[id] = FreedID{Addr: a, At: c.now()}
			c.mu.Unlock()
		}
	}
	if c.announce != nil {
		if err := c.announce.Announce(ctx, want.VIPs); err != nil {
			return want, true, fmt.Errorf("announce: %w", err)
		}
	}
	return want, true, nil
}

// holds reports whether the data plane has v's entry, ring and backends.
func holds(have Programmed, v VIP) bool {
	pv, ok := have.VIPs[v.Key]
	if !ok || !pv.Ready || pv.Flags != v.Flags {
		return false
	}
	for _, b := range v.Backends {
		if have.Backends[b.ID] != b.Addr {
			return false
		}
	}
	return true
}

func keepOnly(vs []VIPState, keys map[VIPKey]bool) []VIPState {
	var out []VIPState
	for _, v := range vs {
		if keys[v.VIP.Key] {
			out = append(out, v)
		}
	}
	return out
}
