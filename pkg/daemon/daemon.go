// Package daemon wires an l4lb node together: configuration, data plane, controller,
// health checks, admin API and metrics, under one errgroup.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/socklb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// ErrUnsupported: the configured data plane is not built into this l4lb.
var ErrUnsupported = errors.New("not supported")

// applyWait bounds how long an admin change waits for its pass.
const applyWait = 5 * time.Second

// Options are the command line's.
type Options struct {
	ConfigPath    string
	CleanupOnExit bool
	Logger        *slog.Logger
}

// Daemon is one l4lb node. The controller owns the desired state (the configured
// services, the operators' overrides and the backends' health); the daemon keeps only the
// running configuration's node settings (interfaces, BGP, admin, paths) and reads
// everything else from the controller's snapshots.
type Daemon struct {
	opts Options
	log  *slog.Logger

	// reloadMu makes reloads (SIGHUP and POST /v1/reload) run one at a time.
	reloadMu sync.Mutex

	mu       sync.Mutex
	cfg      *config.Config
	warnings config.Problems // of the running configuration, logged at start and reload
	reload   reloadResult
	links    map[string]string // interface -> attach mode
	nextHop  net.HardwareAddr
	nextHops map[string]net.HardwareAddr // by interface (setForwarding)
	ready    bool
	sd       readiness // READY=1 to systemd once applied and attached

	dp     lb.Dataplane
	sock   *socketLB      // nil without socket LB (socklb.go)
	pf     prefilterState // prefilter.go
	mon    *monitorState  // nil without events (monitor.go)
	ctrl   *lb.Controller
	ann    *announcer
	prober *health.Prober
	tunnel *tunnelChecks // tunnel health checks' probe program (probe.go); nil until one
	// viaNotes: why a backend's check configured via: tunnel goes direct here (under mu).
	viaNotes map[lb.BackendKey]string
	m        *metrics
}

type reloadResult struct {
	At    time.Time `json:"at"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// New loads and validates the configuration. It starts nothing and touches nothing.
func New(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	cfg, warnings, err := config.LoadWithWarnings(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	return &Daemon{opts: opts, log: opts.Logger, cfg: cfg, warnings: warnings, links: map[string]string{}}, nil
}

// Run runs the node until ctx is done, then shuts down in order: withdraw, wait the drain
// delay, and detach only with CleanupOnExit. Without it the pinned program keeps
// forwarding while no daemon runs.
//
// Nothing on the node changes before the instance lock is held and the admin address is
// bound: a second `l4lb run` fails without touching the running one's maps, link or BGP.
//
// SIGHUP reloads the configuration, from Run's first step on (see sighup); once Run
// returns, SIGHUP is ignored for the rest of the process.
func (d *Daemon) Run(ctx context.Context) error {
	hup := watchSighup(d.log)
	defer hup.close()
	cfg := d.cfg
	unlock, err := lockInstance(cfg.BPFFS)
	if err != nil {
		return err
	}
	defer unlock()
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	defer ln.Close()
	for _, w := range d.warnings {
		d.log.Warn("configuration warning", "warning", w.String())
	}
	ov, err := loadOverrides(cfg.StateFile)
	if err != nil {
		return err
	}
	token := ""
	if cfg.Admin.TokenFile != "" {
		if token, err = admin.ReadToken(cfg.Admin.TokenFile); err != nil {
			return err
		}
	}
	spec, err := specFromConfig(cfg)
	if err != nil {
		return err
	}
	pfPlan, err := planPrefilter(cfg)
	if err != nil {
		return err
	}
	denyRuntime, err := loadDeny(cfg.StateFile)
	if err != nil {
		return err
	}
	d.dp, err = newDataplane(cfg, d.log)
	if err != nil {
		return err
	}
	defer d.dp.Close()
	if err := d.applyPrefilter(pfPlan, denyRuntime); err != nil {
		return err
	}
	if err := d.setupSocketLB(cfg); err != nil {
		return err
	}
	defer d.sock.close()
	if err := d.setForwarding(cfg); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	d.m = newMetrics(reg, d)
	if d.sock != nil {
		reg.MustRegister(newSocketMetrics(d))
	}
	reg.MustRegister(newPrefilterCollector(d))
	d.ann = &announcer{d: d}
	d.ctrl = lb.NewController(d.log, d.dp, d.dp.Info().MaxBackendID, d.ann, d.onApply)
	d.ctrl.SetIDQuarantine(idQuarantine(cfg))
	// A data plane that notices its state changed behind its back (IPVS) asks for a pass.
	if w, ok := d.dp.(interface{ SetOnDrift(func()) }); ok {
		w.SetOnDrift(d.ctrl.Kick)
	}
	d.prober = health.NewProber(d.log, d.onHealth)
	d.prober.OnResult(d.onCheck)
	defer d.closeTunnel()
	d.setupMonitor(cfg)
	d.ctrl.SetOverrides(ov)
	d.ctrl.SetSpec(spec)
	if err := d.setHealthTargets(cfg); err != nil {
		return err
	}
	// Program the maps before attaching, so an adopted link never sees a half state.
	if res := d.ctrl.Apply(ctx); res.Err != nil {
		d.log.Warn("first apply failed, retrying in the background", "error", res.Err)
	}
	links, err := d.dp.Attach(ctx, cfg.Interfaces)
	d.mu.Lock()
	d.links = links
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if err := d.sock.attach(); err != nil {
		return err
	}
	// Announce only once the program is attached: a route must never lead to a node that
	// cannot forward.
	if cfg.BGP.Enabled {
		if err := d.ann.start(ctx, cfg); err != nil {
			return err
		}
		d.ctrl.Reannounce()
	}
	// With BGP, readiness waits (bgp.ready_wait) until the routers have the sessions that
	// bring traffic here.
	waitBGP := cfg.BGP.Enabled && cfg.BGP.ReadyWait > 0
	d.sd.setAttached(d.log, readyStatus(d.dp.Info().Mode, links, len(cfg.VIPs)), waitBGP)
	if waitBGP {
		go func() {
			status := d.ann.waitEstablished(ctx, cfg.BGP.ReadyWait)
			if ctx.Err() != nil {
				return // stopping: no READY=1 after STOPPING=1
			}
			d.log.Info("ready to serve", "status", status)
			d.sd.setBGP(d.log, status)
		}()
	}

	srv := &http.Server{
		Handler: admin.New(d.log, d, token, reg), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute,
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.ctrl.Run(gctx) })
	g.Go(func() error { return d.prober.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		if d.mon != nil {
			d.mon.hub.Close() // ends the monitor streams, which Shutdown would wait for
		}
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error { return d.resolveLoop(gctx) })
	g.Go(func() error { return d.runMonitor(gctx) })
	g.Go(func() error { return watchDataplane(gctx, d.dp, d.ctrl.Kick) })
	if d.sock != nil {
		g.Go(func() error { return d.sock.s.Run(gctx) })
	}
	g.Go(func() error {
		hup.serve(gctx, func() {
			d.sd.reload(d.log, func() {
				if err := d.Reload(); err != nil {
					d.log.Error("reload rejected, keeping the running config", "error", err)
				}
			})
		})
		return nil
	})
	info := d.dp.Info()
	d.log.Info("l4lb running", "dataplane", info.Mode, "reason", info.Reason, "interfaces", cfg.Interfaces,
		"vips", len(cfg.VIPs), "admin", ln.Addr().String())
	err = g.Wait()
	hup.stopping()
	notifyState(d.log, sd.SdNotifyStopping)
	return errors.Join(err, d.shutdown())
}

// sighup turns SIGHUP (systemctl reload) into reloads for one Run. Go's default action
// for SIGHUP is to end the process, which would drop the BGP sessions without a
// withdraw, so Run installs the handler before any start-up step and it never goes
// away before the process exits:
//
//   - during start-up a SIGHUP is logged and kept, and applied as one reload once the
//     node is started (however many came: a reload reads the file as it is then);
//   - while the node runs, each SIGHUP is a reload (one more at most queues behind a
//     running one);
//   - while it stops (withdraw, drain delay, BGP stop) a SIGHUP is logged and ignored;
//   - after Run returns SIGHUP is ignored, until the process exits.
type sighup struct {
	log     *slog.Logger
	sig     chan os.Signal
	pending chan struct{} // capacity 1: a reload asked for and not yet run
	done    chan struct{}

	mu    sync.Mutex
	phase hupPhase
}

type hupPhase int

const (
	hupStarting hupPhase = iota
	hupRunning
	hupStopping
)

func watchSighup(log *slog.Logger) *sighup {
	h := &sighup{log: log, sig: make(chan os.Signal, 1), pending: make(chan struct{}, 1), done: make(chan struct{})}
	signal.Notify(h.sig, syscall.SIGHUP)
	go h.route()
	return h
}

func (h *sighup) route() {
	for {
		select {
		case <-h.done:
			return
		case <-h.sig:
		}
		h.mu.Lock()
		phase := h.phase
		h.mu.Unlock()
		switch phase {
		case hupStarting:
			h.log.Info("sighup during start-up: reloading once started")
		case hupStopping:
			h.log.Info("sighup while stopping: ignored")
			continue
		}
		select {
		case h.pending <- struct{}{}:
		default: // one is queued already
		}
	}
}

func (h *sighup) setPhase(p hupPhase) {
	h.mu.Lock()
	h.phase = p
	h.mu.Unlock()
}

// serve runs reload for each SIGHUP, the one kept from start-up first, until ctx is done.
func (h *sighup) serve(ctx context.Context, reload func()) {
	h.setPhase(hupRunning)
	defer h.setPhase(hupStopping)
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.pending:
			if ctx.Err() != nil {
				return // stopping: select picks at random between ready cases
			}
			reload()
		}
	}
}

// stopping makes later SIGHUPs logged and ignored (serve does it too; Run calls it in
// case serve never ran).
func (h *sighup) stopping() { h.setPhase(hupStopping) }

// close makes SIGHUP do nothing from here until the process exits. (signal.Stop would
// give it back Go's default action, which ends the process.)
func (h *sighup) close() {
	signal.Ignore(syscall.SIGHUP)
	close(h.done)
}

func (d *Daemon) shutdown() error {
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	var errs []error
	if cfg.BGP.Enabled {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.ann.withdraw(ctx); err != nil {
			errs = append(errs, fmt.Errorf("withdraw: %w", err))
		}
		cancel()
		if cfg.DrainDelay > 0 {
			d.log.Info("withdrawn; draining before stop", "delay", cfg.DrainDelay)
			time.Sleep(cfg.DrainDelay)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.ann.stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("bgp stop: %w", err))
		}
		cancel()
	}
	if !d.opts.CleanupOnExit {
		d.log.Info("stopped; the pinned data plane keeps forwarding", "bpffs", cfg.BPFFS)
		return errors.Join(errs...)
	}
	errs = append(errs, d.sock.detachAndUnpin(), d.dp.Detach(context.Background()), d.dp.Unpin())
	if err := os.Remove(cfg.BPFFS); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("remove bpffs directory", "error", err)
	}
	d.log.Info("stopped and cleaned up", "bpffs", cfg.BPFFS)
	return errors.Join(errs...)
}

// Cleanup removes what a node left pinned for its configuration (l4lb cleanup): it
// detaches the pinned links and removes the pinned maps without loading anything, so it
// works after ring_size or conntrack_size changed, and removes the NAT data planes'
// nftables table and iptables chains. It refuses while a daemon runs on the
// same bpffs directory.
func Cleanup(cfg *config.Config) ([]string, error) {
	removedIPVS, err := cleanupIPVS(cfg)
	if err != nil {
		return removedIPVS, err
	}
	if _, err := os.Stat(cfg.BPFFS); errors.Is(err, os.ErrNotExist) {
		nat, err := cleanupNAT()
		return append(removedIPVS, nat...), err
	}
	unlock, err := lockInstance(cfg.BPFFS)
	if err != nil {
		return nil, err
	}
	defer unlock()
	sockRemoved, err := socklb.RemovePinned(cfg.BPFFS)
	if err != nil {
		return append(removedIPVS, sockRemoved...), err
	}
	removed, err := xdp.RemovePinned(cfg.BPFFS)
	nat, err2 := cleanupNAT()
	return append(append(append(removedIPVS, sockRemoved...), removed...), nat...), errors.Join(err, err2)
}

func (d *Daemon) setForwarding(cfg *config.Config) error {
	if cfg.Dataplane == "socket" {
		return nil // nothing is encapsulated: no next hop, no source prefixes
	}
	fc := lb.Forwarding{}
	if cfg.Encap.Source4 != "" {
		fc.Source4 = netip.MustParsePrefix(cfg.Encap.Source4)
	}
	if cfg.Encap.Source6 != "" {
		fc.Source6 = netip.MustParsePrefix(cfg.Encap.Source6)
	}
	if cfg.NextHop.MAC != "" {
		fc.NextHopMAC, _ = net.ParseMAC(cfg.NextHop.MAC)
	} else {
		// Each interface's own next hop; the default route's gateway for the others.
		hops, missing, err := interfaceNextHops(cfg.Interfaces)
		if err != nil {
			d.log.Warn("resolve next hops", "error", err)
		}
		fc.NextHops = hops
		mac, err := gatewayMAC()
		if err != nil {
			d.log.Warn("resolve next hop", "error", err)
		}
		fc.NextHopMAC = mac
		for ifc, why := range missing {
			to := "the default route's gateway " + mac.String()
			if mac == nil {
				to = "back to the mac they came from"
			}
			d.log.Warn("next hop of an interface unknown", "iface", ifc, "reason", why, "sending", to)
		}
	}
	d.mu.Lock()
	d.nextHop, d.nextHops = fc.NextHopMAC, fc.NextHops
	d.mu.Unlock()
	return d.dp.SetForwarding(fc)
}

// resolveLoop follows route and neighbour changes (netlink subscriptions) and updates the
// next hops when they change.
func (d *Daemon) resolveLoop(ctx context.Context) error {
	interval := func() time.Duration {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.cfg.NextHop.Resolve <= 0 { // allowed with nexthop.mac set
			return config.DefaultResolve
		}
		return d.cfg.NextHop.Resolve
	}
	watchRouting(ctx, interval, d.log.Warn, func() {
		d.mu.Lock()
		cfg, have, haveHops := d.cfg, d.nextHop, d.nextHops
		d.mu.Unlock()
		if cfg.NextHop.MAC != "" || cfg.Dataplane == "socket" {
			return
		}
		mac, err := gatewayMAC()
		if err != nil {
			return
		}
		hops, _, err := interfaceNextHops(cfg.Interfaces)
		if err != nil || (reflect.DeepEqual(mac, have) && sameHops(hops, haveHops)) {
			return
		}
		d.log.Info("next hop changed", "from", have, "to", mac, "interfaces", hops)
		if err := d.setForwarding(cfg); err != nil {
			d.log.Warn("update next hop", "error", err)
		}
	})
	return nil
}

// setHealthTargets gives the prober the configuration's checks. The controller learns
// first which backends have one: a backend whose check went away is up again, whatever
// its check last said.
func (d *Daemon) setHealthTargets(cfg *config.Config) error {
	var targets []health.Target
	checked := map[lb.BackendKey]bool{}
	tunneled := map[netip.Addr]bool{}
	notes := map[lb.BackendKey]string{}
	for _, v := range cfg.VIPs {
		if v.Health == nil {
			continue
		}
		for _, b := range v.Backends {
			h := backendHealth(v, b)
			hc := health.Config{Type: h.Type, Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall,
				Method: h.Method, Path: h.Path, ExpectStatus: h.ExpectStatus, BodyMatch: h.BodyMatch,
				Payload: h.Payload, Expect: h.Expect, InsecureSkipVerify: h.InsecureSkipVerify,
				ServerName: h.ServerName, CAFile: h.CAFile}.WithDefaults()
			ch, err := health.New(hc)
			if err != nil {
				return fmt.Errorf("vip %s: %w", v.Name, err)
			}
			port := h.Port
			if port == 0 {
				port = v.Port
			}
			addr := netip.MustParseAddr(b.Address).Unmap()
			k := lb.BackendKey{VIP: v.Name, Backend: addr}
			checked[k] = true
			t := health.Target{
				Key:  k.String(),
				Addr: netip.AddrPortFrom(addr, uint16(port)), Checker: ch, Config: hc,
			}
			var note string
			if t.Path, note = ViaPath(h.Via, d.dp.Info().Mode, v.Forward); note != "" {
				notes[k] = note
			}
			if t.Path == config.ViaTunnel {
				// To the VIP, out through the probe program to this backend.
				if t.Mark, err = d.probeMark(cfg, addr); err != nil {
					return fmt.Errorf("vip %s: backend %s: tunnel check: %w", v.Name, addr, err)
				}
				t.Dial = netip.AddrPortFrom(netip.MustParseAddr(v.Address).Unmap(), uint16(port))
				tunneled[addr] = true
			}
			targets = append(targets, t)
		}
	}
	d.ctrl.SetChecked(checked)
	d.prober.Set(targets)
	d.pruneProbes(tunneled)
	d.mu.Lock()
	d.viaNotes = notes
	d.mu.Unlock()
	return nil
}

// backendHealth is b's check: the VIP's (which must be set) with b's overrides.
func backendHealth(v config.VIP, b config.Backend) config.Health {
	h := *v.Health
	if b.Health != nil {
		mergeHealth(&h, *b.Health)
	}
	return h
}

// mergeHealth overrides the fields o sets.
func mergeHealth(h *config.Health, o config.Health) {
	hv, ov := reflect.ValueOf(h).Elem(), reflect.ValueOf(o)
	for i := 0; i < ov.NumField(); i++ {
		if !ov.Field(i).IsZero() {
			hv.Field(i).Set(ov.Field(i))
		}
	}
}

func (d *Daemon) onHealth(t health.Transition) {
	d.m.healthTransitions.Inc()
	k, err := lb.ParseBackendKey(t.Key)
	if err != nil {
		d.log.Error("health transition for an unknown key", "key", t.Key, "error", err)
		return
	}
	if !d.ctrl.SetHealth(k, t.Up) {
		d.log.Debug("health transition for a removed backend ignored", "key", t.Key)
	}
}

func (d *Daemon) onApply(r lb.ApplyResult) {
	if d.m != nil {
		d.m.applyDuration.Observe(r.Duration.Seconds())
		if r.Changed {
			d.m.applyWritten.Observe(float64(r.Written))
		}
		if r.Err != nil {
			d.m.applyErrors.Inc()
		}
	}
	if r.Err == nil {
		d.mu.Lock()
		first := !d.ready
		d.ready = true
		d.mu.Unlock()
		d.sd.setApplied(d.log)
		if first && r.Written > 1000 {
			// The first pass over a large configuration built every ring; hand the
			// garbage back to the kernel now rather than when the scavenger gets to it.
			debug.FreeOSMemory()
		}
	}
}

// Reload re-reads the configuration file. A configuration that does not validate,
// changes something only a restart can change, or whose deny list or VIP policies the
// data plane refuses, is rejected and the running one stays, unchanged. Reloads run one
// at a time.
func (d *Daemon) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	cfg, warnings, err := config.LoadWithWarnings(d.opts.ConfigPath)
	var spec lb.Spec
	if err == nil {
		d.mu.Lock()
		err = needsRestart(d.cfg, cfg)
		d.mu.Unlock()
	}
	if err == nil {
		spec, err = specFromConfig(cfg)
	}
	if err == nil {
		err = d.fitsMaps(cfg)
	}
	if err == nil {
		err = d.prepareTunnel(cfg)
	}
	var pfPlan *prefilterPlan
	if err == nil {
		pfPlan, err = planPrefilter(cfg)
	}
	if err == nil && pfPlan.any {
		_, err = d.prefilter()
	}
	// The prefilter is applied before anything else changes: one that fails is undone,
	// and the reload is rejected with the running configuration in place.
	if err == nil {
		err = d.reloadPrefilter(pfPlan)
	}
	res := reloadResult{At: time.Now(), OK: err == nil}
	if err != nil {
		res.Error = err.Error()
		d.m.reloads.WithLabelValues("rejected").Inc()
		d.mu.Lock()
		d.reload = res
		d.mu.Unlock()
		return fmt.Errorf("%w: %w", admin.ErrBadRequest, err)
	}
	d.mu.Lock()
	d.cfg, d.warnings, d.reload = cfg, warnings, res
	d.mu.Unlock()
	for _, w := range warnings {
		d.log.Warn("configuration warning", "warning", w.String())
	}
	// The controller learns the new backends before the prober does: a report from a
	// check that is about to stop is then ignored, and a backend added back starts
	// healthy on both sides.
	d.ctrl.SetSpec(spec)
	if err := d.setHealthTargets(cfg); err != nil {
		d.log.Error("health checks", "error", err)
	}
	if err := d.setForwarding(cfg); err != nil {
		d.log.Warn("update forwarding settings", "error", err)
	}
	d.setMonitorConfig(cfg.Monitor)
	d.m.reloads.WithLabelValues("applied").Inc()
	d.log.Info("configuration reloaded", "vips", len(cfg.VIPs))
	return nil
}

// fitsMaps refuses a configuration whose (VIP, backend) pairs the loaded XDP membership
// map cannot take: sized at start, it grows only with a restart. Accepted, the reload's
// passes would fail until then.
func (d *Daemon) fitsMaps(cfg *config.Config) error {
	pc, ok := d.dp.(interface{ PairCapacity() int })
	if !ok {
		return nil
	}
	if n, max := vipBackendPairs(cfg), pc.PairCapacity(); n > max {
		return fmt.Errorf("vips: %d (VIP, backend) pairs, more than the %d this node's vip_backends map was sized for at start: restart l4lb to resize it", n, max)
	}
	return nil
}

// Ready is true after the first successful apply.
func (d *Daemon) Ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ready
}

// mutate changes one override through the controller: saved to the state file first,
// so a failure changes nothing.
func (d *Daemon) mutate(vip, backend string, f func(*lb.Override)) error {
	addr, err := netip.ParseAddr(backend)
	if err != nil {
		return fmt.Errorf("%w: backend %q is not an address", admin.ErrBadRequest, backend)
	}
	k, err := d.ctrl.Snapshot().Spec.Find(vip, addr)
	if err != nil {
		return fmt.Errorf("%w: %w", admin.ErrNotFound, err)
	}
	d.mu.Lock()
	stateFile := d.cfg.StateFile
	d.mu.Unlock()
	o, gen, err := d.ctrl.UpdateOverride(k, f, func(next lb.Overrides) error { return saveOverrides(stateFile, next) })
	if errors.Is(err, lb.ErrNoBackend) {
		return fmt.Errorf("%w: %w", admin.ErrNotFound, err)
	}
	if err != nil {
		return err
	}
	weight := "configured"
	if o.Weight != nil {
		weight = strconv.FormatUint(uint64(*o.Weight), 10)
	}
	d.log.Info("override changed", "vip", k.VIP, "backend", k.Backend, "drain", o.Drain, "weight", weight)
	// Answer once the change is in the data plane: after `l4lb drain` returns, the
	// backend gets no new flows. The change is saved either way and a failing pass is
	// retried; the caller is told it is still pending.
	ctx, cancel := context.WithTimeout(context.Background(), applyWait)
	defer cancel()
	if err := d.ctrl.WaitApplied(ctx, gen); err != nil {
		return fmt.Errorf("%w: saved, but not applied within %s (see last_apply in l4lb status); it is retried", admin.ErrPending, applyWait)
	}
	return nil
}

// SetDrain drains or undrains a backend of a VIP.
func (d *Daemon) SetDrain(vip, backend string, drain bool) error {
	return d.mutate(vip, backend, func(o *lb.Override) { o.Drain = drain })
}

// SetWeight overrides a backend's weight (nil: back to the configured weight).
func (d *Daemon) SetWeight(vip, backend string, w *uint32) error {
	return d.mutate(vip, backend, func(o *lb.Override) { o.Weight = w })
}
