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

	"github.com/l4lb/l4lb/pkg/config"
)

// applyParallelism bounds the VIPs a pass writes at once.
const applyParallelism = 32

// Dataplane is what the controller programs. pkg/lb/xdp implements it; the fallback data
// planes will too.
type Dataplane interface {
	// SetVIP writes the VIP's backends, swaps in its ring whole, then writes the VIP.
	// The controller calls it concurrently for different VIPs.
	SetVIP(VIP) (uint32, error)
	// DeleteVIP removes the VIP entry, then its ring.
	DeleteVIP(VIPKey) error
	// DeleteBackend removes a backend; flows pinned to it are re-hashed.
	DeleteBackend(id uint32) error
	// VIPs and Backends read back what the data plane holds.
	VIPs() (map[VIPKey]uint32, error)
	Backends() (map[uint32]netip.Addr, error)
}

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
}

// Controller owns the desired state and applies it to the data plane from one goroutine.
// Inputs only signal it; passes are coalesced, skipped when nothing changed, and retried
// with backoff when they fail.
type Controller struct {
	log      *slog.Logger
	dp       Dataplane
	announce Announcer
	onApply  func(ApplyResult)
	signal   chan struct{}

	mu        sync.Mutex
	cfg       *config.Config
	overrides Overrides
	health    map[BackendKey]bool
	state     State // last applied
	applied   bool
	// reannounce: the next pass calls the Announcer even if nothing else changed.
	reannounce bool
	last       ApplyResult
}

// NewController returns a controller; nothing runs until Run.
func NewController(logger *slog.Logger, dp Dataplane, announce Announcer, onApply func(ApplyResult)) *Controller {
	if onApply == nil {
		onApply = func(ApplyResult) {}
	}
	return &Controller{
		log: logger.With("component", "controller"), dp: dp, announce: announce, onApply: onApply,
		signal: make(chan struct{}, 1), overrides: Overrides{}, health: map[BackendKey]bool{},
	}
}

func (c *Controller) kick() {
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// SetConfig replaces the configuration (already validated).
func (c *Controller) SetConfig(cfg *config.Config) {
	c.mu.Lock()
	c.cfg = cfg
	c.mu.Unlock()
	c.kick()
}

// SetOverrides replaces the operators' overrides.
func (c *Controller) SetOverrides(ov Overrides) {
	c.mu.Lock()
	c.overrides = ov
	c.mu.Unlock()
	c.kick()
}

// SetHealth records a backend's health transition.
func (c *Controller) SetHealth(k BackendKey, up bool) {
	c.mu.Lock()
	c.health[k] = up
	c.mu.Unlock()
	c.kick()
}

// State returns the last applied state and the last pass's result.
func (c *Controller) State() (State, ApplyResult, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.last, c.applied
}

// Reannounce asks for a pass that calls the Announcer even when the maps are in sync
// (the BGP speaker has just started).
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
		res := c.pass(ctx)
		c.onApply(res)
		if res.Err != nil {
			c.log.Warn("apply failed, will retry", "error", res.Err, "backoff", backoff)
			retry = time.After(backoff)
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
	}
}

// Apply runs one pass now (tests, startup).
func (c *Controller) Apply(ctx context.Context) ApplyResult {
	res := c.pass(ctx)
	c.onApply(res)
	return res
}

func (c *Controller) pass(ctx context.Context) ApplyResult {
	start := time.Now()
	c.mu.Lock()
	cfg, ov := c.cfg, c.overrides
	health := make(map[BackendKey]bool, len(c.health))
	for k, v := range c.health {
		health[k] = v
	}
	prev, applied, reannounce := c.state, c.applied, c.reannounce
	c.mu.Unlock()
	if cfg == nil {
		return ApplyResult{At: start, Err: errors.New("no configuration")}
	}
	res := ApplyResult{At: start}
	st, changed, err := c.apply(ctx, cfg, ov, health, prev, applied, reannounce)
	res.Duration, res.Err, res.Changed = time.Since(start), err, changed
	c.mu.Lock()
	if err == nil {
		c.state, c.applied = st, true
		if reannounce {
			c.reannounce = false
		}
	}
	c.last = res
	c.mu.Unlock()
	if changed && err == nil {
		c.log.Info("applied", "vips", len(st.VIPs), "duration", res.Duration)
	}
	return res
}

func (c *Controller) apply(ctx context.Context, cfg *config.Config, ov Overrides, health map[BackendKey]bool, prev State, applied, reannounce bool) (State, bool, error) {
	haveB, err := c.dp.Backends()
	if err != nil {
		return State{}, false, err
	}
	byAddr := make(map[netip.Addr]uint32, len(haveB))
	for id, a := range haveB {
		byAddr[a] = id
	}
	ids, err := AssignIDs(byAddr, ConfigBackends(cfg), config.MaxBackends)
	if err != nil {
		return State{}, false, err
	}
	want, err := Desired(cfg, ov, health, ids)
	if err != nil {
		return State{}, false, err
	}
	haveV, err := c.dp.VIPs()
	if err != nil {
		return State{}, false, err
	}
	wantKeys := make(map[VIPKey]bool, len(want.VIPs))
	for _, v := range want.VIPs {
		wantKeys[v.VIP.Key] = true
	}
	inSync := applied && reflect.DeepEqual(prev, want) && len(haveV) == len(want.VIPs)
	for k := range haveV {
		inSync = inSync && wantKeys[k]
	}
	if inSync {
		if reannounce && c.announce != nil {
			if err := c.announce.Announce(ctx, want.VIPs); err != nil {
				return want, false, fmt.Errorf("announce: %w", err)
			}
		}
		return want, false, nil
	}

	// Removing: withdraw first, then the VIP and its ring, then unused backends.
	var removed []VIPKey
	for k := range haveV {
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
	}
	// Adding and changing: backends, the ring swapped whole, then the VIP (SetVIP does
	// them in that order). Unchanged VIPs are not rewritten.
	prevByKey := map[VIPKey]VIPState{}
	if applied {
		for _, v := range prev.VIPs {
			prevByKey[v.VIP.Key] = v
		}
	}
	// Each ring swap waits for an RCU grace period (tens of milliseconds), so changed
	// VIPs are written in parallel: a health change touching many VIPs, or a restart
	// with hundreds, costs a few grace periods rather than one per VIP.
	g := new(errgroup.Group)
	g.SetLimit(applyParallelism)
	for _, v := range want.VIPs {
		if p, ok := prevByKey[v.VIP.Key]; ok && reflect.DeepEqual(p.VIP, v.VIP) {
			if _, present := haveV[v.VIP.Key]; present {
				continue
			}
		}
		g.Go(func() error {
			_, err := c.dp.SetVIP(v.VIP)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return State{}, true, err
	}
	for id, a := range haveB {
		if ids[a] != id {
			if err := c.dp.DeleteBackend(id); err != nil {
				return State{}, true, err
			}
		}
	}
	if c.announce != nil {
		if err := c.announce.Announce(ctx, want.VIPs); err != nil {
			return want, true, fmt.Errorf("announce: %w", err)
		}
	}
	return want, true, nil
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
