package daemon

import (
	"fmt"
	"net/netip"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/probe"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// tunnelChecks sends health checks with `via: tunnel` along the data path: the probe
// program (pkg/lb/probe) on the XDP interfaces, and the probe id each checked backend
// address has there. Loaded on the first tunnel check, kept until the daemon stops.
type tunnelChecks struct {
	e   *probe.Encap
	ids map[netip.Addr]uint32
}

// ViaPath is how a check with Health.Via set goes on a node in mode: its path ("tunnel"
// or "direct") and, when it is not the one asked for, why.
func ViaPath(via, mode string, ipvsForward string) (path, why string) {
	if via != config.ViaTunnel {
		return config.ViaDirect, ""
	}
	switch mode {
	case "xdp":
		return config.ViaTunnel, ""
	case "nftables", "iptables":
		return config.ViaDirect, mode + " forwards by DNAT to the backend's address: the check goes there, as forwarded traffic does"
	case "socket":
		return config.ViaDirect, "the socket LB connects clients to the backend's address: the check goes there, as they do"
	case "ipvs":
		if ipvsForward == config.ForwardMasq {
			return config.ViaDirect, "ipvs masq forwards by DNAT to the backend's address: the check goes there, as forwarded traffic does"
		}
		return config.ViaDirect, "ipvs tunnel mode: the kernel encapsulates, and a check through it needs dataplane xdp; it goes to the backend's address"
	}
	return config.ViaDirect, "the data plane " + mode + " has no tunnel check; it goes to the backend's address"
}

// prepareTunnel loads the probe program if cfg has a check that goes through the tunnel
// here and none is loaded yet: a reload that needs it and cannot have it is rejected
// before anything changes.
func (d *Daemon) prepareTunnel(cfg *config.Config) error {
	if d.tunnel != nil {
		return nil
	}
	for _, v := range cfg.VIPs {
		if v.Health == nil {
			continue
		}
		for _, b := range v.Backends {
			if path, _ := ViaPath(backendHealth(v, b).Via, d.dp.Info().Mode, v.Forward); path == config.ViaTunnel {
				return d.loadTunnel(cfg)
			}
		}
	}
	return nil
}

// loadTunnel loads the probe program and attaches it to the XDP interfaces.
func (d *Daemon) loadTunnel(cfg *config.Config) error {
	n, ok := d.dp.(*xdp.Node)
	if !ok {
		return fmt.Errorf("a tunnel check needs the xdp data plane, not %s", d.dp.Info().Mode)
	}
	e, err := probe.Load(probe.Options{Shared: n.Dataplane().Shared(), Logger: d.log})
	if err != nil {
		return err
	}
	if err := e.Attach(cfg.Interfaces); err != nil {
		e.Close()
		return err
	}
	d.tunnel = &tunnelChecks{e: e, ids: map[netip.Addr]uint32{}}
	return nil
}

// probeMark is the SO_MARK that sends a check of backend addr through the tunnel, loading
// the probe program on the XDP interfaces the first time.
func (d *Daemon) probeMark(cfg *config.Config, addr netip.Addr) (uint32, error) {
	if d.tunnel == nil {
		if err := d.loadTunnel(cfg); err != nil {
			return 0, err
		}
	}
	t := d.tunnel
	id, ok := t.ids[addr]
	if !ok {
		used := map[uint32]bool{}
		for _, i := range t.ids {
			used[i] = true
		}
		for id = 1; used[id]; id++ {
		}
		if id > probe.MaxID {
			return 0, fmt.Errorf("more than %d backends checked through the tunnel", probe.MaxID)
		}
		if err := t.e.SetTarget(id, addr); err != nil {
			return 0, err
		}
		t.ids[addr] = id
	}
	return t.e.Mark(id), nil
}

// pruneProbes forgets the probe ids of backends no tunnel check uses any more.
func (d *Daemon) pruneProbes(used map[netip.Addr]bool) {
	if d.tunnel == nil {
		return
	}
	for a, id := range d.tunnel.ids {
		if used[a] {
			continue
		}
		if err := d.tunnel.e.DeleteTarget(id); err != nil {
			d.log.Warn("forget probe target", "backend", a, "error", err)
			continue
		}
		delete(d.tunnel.ids, a)
	}
}

// closeTunnel removes the probe program.
func (d *Daemon) closeTunnel() {
	if d.tunnel == nil {
		return
	}
	if err := d.tunnel.e.Close(); err != nil {
		d.log.Warn("remove probe program", "error", err)
	}
	d.tunnel = nil
}

// onCheck counts one check's result in the metrics.
func (d *Daemon) onCheck(r health.Result) {
	k, err := lb.ParseBackendKey(r.Key)
	if err != nil {
		return
	}
	labels := []string{k.VIP, k.Backend.String(), r.Path}
	if r.Err != nil {
		d.m.healthFailures.WithLabelValues(labels...).Inc()
		return
	}
	d.m.healthRTT.WithLabelValues(labels...).Observe(r.RTT.Seconds())
}

// checkView is the backend's check for the VIP named vip, nil when it has none.
func (d *Daemon) checkView(vip string, addr netip.Addr) *CheckView {
	st, ok := d.prober.Status(lb.BackendKey{VIP: vip, Backend: addr}.String())
	if !ok {
		return nil
	}
	cv := &CheckView{Type: st.Type, Via: st.Path, Target: st.Dial.String(), LastAt: st.LastAt,
		LastRTTSeconds: st.LastRTT.Seconds(), LastError: st.LastError, LastErrorAt: st.LastErrorAt}
	d.mu.Lock()
	cv.ViaNote = d.viaNotes[lb.BackendKey{VIP: vip, Backend: addr}]
	d.mu.Unlock()
	return cv
}

// HealthPathNotes says, for `l4lb check`, which path each VIP's tunnel checks take with
// cfg's data plane: one line per VIP that has a check with via: tunnel.
func HealthPathNotes(cfg *config.Config) []string {
	var out []string
	for _, v := range cfg.VIPs {
		if v.Health == nil {
			continue
		}
		tunnel := 0
		for _, b := range v.Backends {
			if backendHealth(v, b).Via == config.ViaTunnel {
				tunnel++
			}
		}
		if tunnel == 0 {
			continue
		}
		what := fmt.Sprintf("vip %s: %d of %d backends checked via tunnel", v.Name, tunnel, len(v.Backends))
		switch mode := cfg.Dataplane; mode {
		case "auto", "":
			out = append(out, what+": with dataplane auto, through the tunnel if xdp is chosen at start, else to each backend's address (l4lb status says which)")
		default:
			if path, why := ViaPath(config.ViaTunnel, mode, v.Forward); path == config.ViaTunnel {
				out = append(out, what+": to the vip, encapsulated to each backend as forwarded traffic (needs encap sources and the backends' decap)")
			} else {
				out = append(out, what+": direct: "+why)
			}
		}
	}
	return out
}
