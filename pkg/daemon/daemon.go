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
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// Options are the command line's.
type Options struct {
	ConfigPath    string
	CleanupOnExit bool
	Logger        *slog.Logger
}

// Daemon is one l4lb node.
type Daemon struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	cfg       *config.Config
	overrides lb.Overrides
	reload    reloadResult
	links     map[string]string // interface -> attach mode
	nextHop   net.HardwareAddr

	dp     *xdp.Dataplane
	ctrl   *lb.Controller
	ann    *announcer
	prober *health.Prober
	m      *metrics
	ready  bool
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
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	return &Daemon{opts: opts, log: opts.Logger, cfg: cfg, links: map[string]string{}}, nil
}

// Run runs the node until ctx is done, then shuts down in order: withdraw, wait the drain
// delay, and detach only with CleanupOnExit. Without it the pinned program keeps
// forwarding while no daemon runs.
func (d *Daemon) Run(ctx context.Context) error {
	cfg := d.cfg
	ov, err := loadOverrides(cfg.StateFile)
	if err != nil {
		return err
	}
	d.overrides = ov
	token := ""
	if cfg.Admin.TokenFile != "" {
		if token, err = admin.ReadToken(cfg.Admin.TokenFile); err != nil {
			return err
		}
	}
	d.dp, err = xdp.Load(xdp.Options{
		PinPath: cfg.BPFFS, RingSize: cfg.XDP.RingSize, ConntrackSize: cfg.XDP.ConntrackSize,
		UDPTimeout: cfg.XDP.UDPTimeout, MTU: cfg.XDP.MTU, Logger: d.log,
	})
	if err != nil {
		return err
	}
	defer d.dp.Close()
	if err := d.setForwarding(cfg); err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	d.m = newMetrics(reg, d)
	d.ann = &announcer{d: d}
	d.ctrl = lb.NewController(d.log, d.dp, d.ann, d.onApply)
	d.prober = health.NewProber(d.log, d.onHealth)
	d.ctrl.SetOverrides(ov)
	d.ctrl.SetConfig(cfg)
	if err := d.setHealthTargets(cfg); err != nil {
		return err
	}
	// Program the maps before attaching, so an adopted link never sees a half state.
	if res := d.ctrl.Apply(ctx); res.Err != nil {
		d.log.Warn("first apply failed, retrying in the background", "error", res.Err)
	}
	for _, ifc := range cfg.Interfaces {
		mode, err := d.dp.Attach(ifc)
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.links[ifc] = mode
		d.mu.Unlock()
	}
	// Announce only once the program is attached: a route must never lead to a node that
	// cannot forward.
	if cfg.BGP.Enabled {
		if err := d.ann.start(ctx, cfg); err != nil {
			return err
		}
		d.ctrl.Reannounce()
	}

	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return fmt.Errorf("admin listen: %w", err)
	}
	srv := &http.Server{Handler: admin.New(d.log, d, token, reg), ReadHeaderTimeout: 5 * time.Second}

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
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error { return d.resolveLoop(gctx) })
	g.Go(func() error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				if err := d.Reload(); err != nil {
					d.log.Error("reload rejected, keeping the running config", "error", err)
				}
			}
		}
	})
	d.log.Info("l4lb running", "interfaces", cfg.Interfaces, "vips", len(cfg.VIPs), "admin", ln.Addr().String())
	err = g.Wait()
	return errors.Join(err, d.shutdown())
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
		d.log.Info("stopped; the pinned xdp program keeps forwarding", "bpffs", cfg.BPFFS)
		return errors.Join(errs...)
	}
	for _, ifc := range cfg.Interfaces {
		if err := d.dp.Detach(ifc); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, d.dp.Unpin())
	d.log.Info("stopped and cleaned up", "bpffs", cfg.BPFFS)
	return errors.Join(errs...)
}

// Cleanup removes the pinned program and maps of a configuration: detaches the pinned
// links and unpins everything (l4lb cleanup).
func Cleanup(cfg *config.Config, logger *slog.Logger) error {
	dp, err := xdp.Load(xdp.Options{PinPath: cfg.BPFFS, RingSize: cfg.XDP.RingSize, ConntrackSize: cfg.XDP.ConntrackSize, Logger: logger})
	if err != nil {
		return err
	}
	defer dp.Close()
	var errs []error
	for _, ifc := range cfg.Interfaces {
		if _, err := dp.Attach(ifc); err == nil {
			errs = append(errs, dp.Detach(ifc))
		}
	}
	errs = append(errs, dp.Unpin(), os.Remove(cfg.BPFFS))
	return errors.Join(errs...)
}

func (d *Daemon) setForwarding(cfg *config.Config) error {
	fc := xdp.Config{}
	if cfg.Encap.Source4 != "" {
		fc.Source4 = netip.MustParsePrefix(cfg.Encap.Source4)
	}
	if cfg.Encap.Source6 != "" {
		fc.Source6 = netip.MustParsePrefix(cfg.Encap.Source6)
	}
	if cfg.NextHop.MAC != "" {
		fc.NextHopMAC, _ = net.ParseMAC(cfg.NextHop.MAC)
	} else {
		mac, err := gatewayMAC()
		if err != nil {
			d.log.Warn("resolve next hop", "error", err)
		}
		if mac == nil {
			d.log.Warn("next hop mac unknown: sending encapsulated packets back to the mac they came from")
		}
		fc.NextHopMAC = mac
	}
	d.mu.Lock()
	d.nextHop = fc.NextHopMAC
	d.mu.Unlock()
	return d.dp.SetConfig(fc)
}

func (d *Daemon) resolveLoop(ctx context.Context) error {
	for {
		d.mu.Lock()
		cfg, have := d.cfg, d.nextHop
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.NextHop.Resolve):
		}
		if cfg.NextHop.MAC != "" {
			continue
		}
		mac, err := gatewayMAC()
		if err != nil || mac == nil || reflect.DeepEqual(mac, have) {
			continue
		}
		d.log.Info("next hop changed", "from", have, "to", mac)
		if err := d.setForwarding(cfg); err != nil {
			d.log.Warn("update next hop", "error", err)
		}
	}
}

// healthKey is the prober's key of a VIP's backend.
func healthKey(k lb.BackendKey) string { return k.String() }

func (d *Daemon) setHealthTargets(cfg *config.Config) error {
	var targets []health.Target
	for _, v := range cfg.VIPs {
		if v.Health == nil {
			continue
		}
		for _, b := range v.Backends {
			h := *v.Health
			if b.Health != nil {
				mergeHealth(&h, *b.Health)
			}
			hc := health.Config{Type: h.Type, Interval: h.Interval, Timeout: h.Timeout, Rise: h.Rise, Fall: h.Fall,
				Method: h.Method, Path: h.Path, ExpectStatus: h.ExpectStatus, BodyMatch: h.BodyMatch,
				Payload: h.Payload, Expect: h.Expect, InsecureSkipVerify: h.InsecureSkipVerify}.WithDefaults()
			ch, err := health.New(hc)
			if err != nil {
				return fmt.Errorf("vip %s: %w", v.Name, err)
			}
			port := h.Port
			if port == 0 {
				port = v.Port
			}
			addr := netip.MustParseAddr(b.Address).Unmap()
			targets = append(targets, health.Target{
				Key:  healthKey(lb.BackendKey{VIP: v.Name, Backend: addr}),
				Addr: netip.AddrPortFrom(addr, uint16(port)), Checker: ch, Config: hc,
			})
		}
	}
	d.prober.Set(targets)
	return nil
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
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	for _, v := range cfg.VIPs {
		for _, b := range v.Backends {
			k := lb.BackendKey{VIP: v.Name, Backend: netip.MustParseAddr(b.Address).Unmap()}
			if healthKey(k) == t.Key {
				d.ctrl.SetHealth(k, t.Up)
				return
			}
		}
	}
}

func (d *Daemon) onApply(r lb.ApplyResult) {
	if d.m != nil {
		d.m.applyDuration.Observe(r.Duration.Seconds())
		if r.Err != nil {
			d.m.applyErrors.Inc()
		}
	}
	if r.Err == nil {
		d.mu.Lock()
		d.ready = true
		d.mu.Unlock()
	}
}

// Reload re-reads the configuration file. A configuration that does not validate, or
// changes something only a restart can change, is rejected and the running one stays.
func (d *Daemon) Reload() error {
	cfg, err := config.Load(d.opts.ConfigPath)
	if err == nil {
		d.mu.Lock()
		err = needsRestart(d.cfg, cfg)
		d.mu.Unlock()
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
	if err := d.setHealthTargets(cfg); err != nil {
		return err
	}
	d.mu.Lock()
	d.cfg, d.reload = cfg, res
	d.mu.Unlock()
	if err := d.setForwarding(cfg); err != nil {
		d.log.Warn("update forwarding settings", "error", err)
	}
	d.m.reloads.WithLabelValues("applied").Inc()
	d.ctrl.SetConfig(cfg)
	if cfg.BGP.Enabled {
		// bgp.communities is not part of the desired state: announce again to apply it.
		d.ctrl.Reannounce()
	}
	d.log.Info("configuration reloaded", "vips", len(cfg.VIPs))
	return nil
}

func needsRestart(old, cur *config.Config) error {
	var errs []error
	if !reflect.DeepEqual(old.Interfaces, cur.Interfaces) {
		errs = append(errs, fmt.Errorf("interfaces: changed from %v to %v: needs a restart", old.Interfaces, cur.Interfaces))
	}
	if old.XDP != cur.XDP {
		errs = append(errs, fmt.Errorf("xdp: changed from %+v to %+v: needs a restart", old.XDP, cur.XDP))
	}
	ob, cb := old.BGP, cur.BGP
	ob.Communities, cb.Communities = nil, nil
	if !reflect.DeepEqual(ob, cb) {
		errs = append(errs, errors.New("bgp: changes other than communities need a restart"))
	}
	if old.BPFFS != cur.BPFFS || old.Dataplane != cur.Dataplane || old.Admin != cur.Admin || old.StateFile != cur.StateFile {
		errs = append(errs, errors.New("bpffs, dataplane, admin and state_file: changes need a restart"))
	}
	return errors.Join(errs...)
}

// Ready is true after the first successful apply.
func (d *Daemon) Ready() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ready
}

// findBackend resolves a VIP (by name or key string) and backend address in the running
// configuration.
func (d *Daemon) findBackend(vip, backend string) (lb.BackendKey, error) {
	addr, err := netip.ParseAddr(backend)
	if err != nil {
		return lb.BackendKey{}, fmt.Errorf("%w: backend %q is not an address", admin.ErrBadRequest, backend)
	}
	addr = addr.Unmap()
	for _, v := range d.cfg.VIPs {
		if v.Name != vip && vipKeyString(v) != vip {
			continue
		}
		for _, b := range v.Backends {
			if netip.MustParseAddr(b.Address).Unmap() == addr {
				return lb.BackendKey{VIP: v.Name, Backend: addr}, nil
			}
		}
		return lb.BackendKey{}, fmt.Errorf("%w: vip %s has no backend %s", admin.ErrNotFound, vip, addr)
	}
	return lb.BackendKey{}, fmt.Errorf("%w: no vip %q", admin.ErrNotFound, vip)
}

func vipKeyString(v config.VIP) string {
	p, _ := lb.ParseProto(v.Protocol)
	return lb.VIPKey{Addr: netip.MustParseAddr(v.Address).Unmap(), Port: uint16(v.Port), Proto: p}.String()
}

// mutate changes one override: saved to the state file first, so a failure changes
// nothing, then handed to the controller.
func (d *Daemon) mutate(vip, backend string, f func(*lb.Override)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	k, err := d.findBackend(vip, backend)
	if err != nil {
		return err
	}
	next := make(lb.Overrides, len(d.overrides)+1)
	for kk, o := range d.overrides {
		next[kk] = o
	}
	o := next[k]
	f(&o)
	if o == (lb.Override{}) {
		delete(next, k)
	} else {
		next[k] = o
	}
	if err := saveOverrides(d.cfg.StateFile, next); err != nil {
		return err
	}
	d.overrides = next
	d.ctrl.SetOverrides(next)
	d.log.Info("override changed", "vip", k.VIP, "backend", k.Backend, "drain", o.Drain, "weight", o.Weight)
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
