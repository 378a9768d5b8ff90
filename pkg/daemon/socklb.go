package daemon

import (
	"fmt"
	"log/slog"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/socklb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// topClients is how many local clients per VIP /v1/sockets lists.
const topClients = 10

func xdpOptions(cfg *config.Config, logger *slog.Logger) xdp.Options {
	slots, _ := xdp.ParseSlotMapping(cfg.XDP.SlotMapping) // validated by config
	return xdp.Options{SlotMapping: slots,
		PinPath: cfg.BPFFS, RingSize: cfg.XDP.RingSize, ConntrackSize: cfg.XDP.ConntrackSize,
		UDPTimeout: cfg.XDP.UDPTimeout, MTU: cfg.XDP.MTU, Logger: logger, RingSlots: ringSlots(cfg),
		PairBuckets: xdp.PairBucketsFor(vipBackendPairs(cfg)),
	}
}

// socketCgroup is the configured cgroup, or the cgroup v2 root.
func socketCgroup(cfg *config.Config) (string, error) {
	if cfg.SocketLB.Cgroup != "" {
		return cfg.SocketLB.Cgroup, nil
	}
	return socklb.DefaultCgroup()
}

// loadSocketLB loads the socket LB over an XDP data plane's maps.
func loadSocketLB(cfg *config.Config, x *xdp.Dataplane, logger *slog.Logger) (*socklb.Dataplane, error) {
	s, err := socklb.Load(socklb.Options{PinPath: cfg.BPFFS, Shared: x.Shared(), SampleEvery: cfg.SocketLB.SampleEvery, Logger: logger})
	if err != nil {
		return nil, err
	}
	s.ResetOnNewVIP(x)
	return s, nil
}

// newSocketDataplane is dataplane: socket: the XDP maps loaded (never attached) and the
// socket LB over them.
func newSocketDataplane(cfg *config.Config, logger *slog.Logger) (lb.Dataplane, error) {
	cg, err := socketCgroup(cfg)
	if err != nil {
		return nil, err
	}
	x, err := xdp.Load(xdpOptions(cfg, logger))
	if err != nil {
		return nil, err
	}
	s, err := loadSocketLB(cfg, x, logger)
	if err != nil {
		x.Close()
		return nil, err
	}
	return socklb.NewNode(x, s, cg, "configured (dataplane: socket)"), nil
}

// socketLB is the part of the daemon that runs the socket LB beside XDP (socket_lb.enabled
// with dataplane: xdp). With dataplane: socket the data plane is the socket LB and this
// holds no extra program.
type socketLB struct {
	s      *socklb.Dataplane
	extra  bool   // loaded here beside XDP (else the data plane's own)
	cgroup string // where an extra one attaches
}

// setupSocketLB finds or loads the socket LB for the configuration.
func (d *Daemon) setupSocketLB(cfg *config.Config) error {
	if n, ok := d.dp.(*socklb.Node); ok {
		d.sock = &socketLB{s: n.Socket()}
		return nil
	}
	if !cfg.SocketLB.Enabled {
		// A previous run with socket LB left its hooks pinned: they would go on
		// balancing from the shared maps. Turning it off removes them.
		removed, err := socklb.RemovePinned(cfg.BPFFS)
		if len(removed) > 0 {
			d.log.Info("socket lb is off: removed what a previous run pinned", "removed", removed)
		}
		return err
	}
	n, ok := d.dp.(*xdp.Node)
	if !ok {
		return fmt.Errorf("socket_lb: needs the xdp data plane's maps, not %s", d.dp.Info().Mode)
	}
	cg, err := socketCgroup(cfg)
	if err != nil {
		return err
	}
	s, err := loadSocketLB(cfg, n.Dataplane(), d.log)
	if err != nil {
		return err
	}
	d.sock = &socketLB{s: s, extra: true, cgroup: cg}
	return nil
}

// attach attaches an extra socket LB (the data plane attaches its own).
func (s *socketLB) attach() error {
	if s == nil || !s.extra {
		return nil
	}
	return s.s.Attach(s.cgroup)
}

// detachAndUnpin removes an extra socket LB's hooks and pins (stop with cleanup).
func (s *socketLB) detachAndUnpin() error {
	if s == nil || !s.extra {
		return nil
	}
	if err := s.s.Detach(); err != nil {
		return err
	}
	return s.s.Unpin()
}

func (s *socketLB) close() {
	if s != nil && s.extra {
		s.s.Close()
	}
}

// SocketLBView is the socket LB in /v1/state.
type SocketLBView struct {
	Cgroup          string `json:"cgroup"`
	Attached        bool   `json:"attached"`
	SampledConnects uint64 `json:"sampled_connects"`
}

func (d *Daemon) socketView() *SocketLBView {
	if d.sock == nil {
		return nil
	}
	cg := d.sock.s.Cgroup()
	return &SocketLBView{Cgroup: cg, Attached: cg != "", SampledConnects: d.sock.s.SampledTotal()}
}

// vipIDs reads the data plane's VIP ids (the index of the socket LB's counters).
func (d *Daemon) vipIDs() map[lb.VIPKey]uint32 {
	p, err := d.dp.Programmed()
	if err != nil {
		d.log.Warn("read programmed vips", "error", err)
		return nil
	}
	ids := make(map[lb.VIPKey]uint32, len(p.VIPs))
	for k, v := range p.VIPs {
		ids[k] = v.ID
	}
	return ids
}

// socketCounters returns a VIP's socket LB counters (nil without socket LB).
func (d *Daemon) socketCounters(ids map[lb.VIPKey]uint32, k lb.VIPKey) *socklb.VIPCounters {
	if d.sock == nil {
		return nil
	}
	id, ok := ids[k]
	if !ok {
		return &socklb.VIPCounters{}
	}
	c, err := d.sock.s.Counters(id)
	if err != nil {
		d.log.Warn("read socket counters", "vip", k, "error", err)
	}
	return &c
}

// SocketsView is /v1/sockets: per VIP, the socket LB's counters and the local processes
// that made the most sampled translated connects.
type SocketsView struct {
	Enabled     bool              `json:"enabled"`
	Cgroup      string            `json:"cgroup,omitempty"`
	SampleEvery uint32            `json:"sample_every"`
	VIPs        []SocketVIPView   `json:"vips"`
	Cgroups     map[uint64]string `json:"cgroups,omitempty"`
}

// SocketVIPView is one VIP in /v1/sockets.
type SocketVIPView struct {
	Name     string             `json:"name"`
	Key      string             `json:"key"`
	Counters socklb.VIPCounters `json:"counters"`
	Clients  []socklb.Client    `json:"top_clients"`
	Other    uint64             `json:"other_sampled_connects,omitempty"`
}

// Sockets implements /v1/sockets.
func (d *Daemon) Sockets() any {
	v := SocketsView{VIPs: []SocketVIPView{}}
	if d.sock == nil {
		return v
	}
	d.mu.Lock()
	v.SampleEvery = d.cfg.SocketLB.SampleEvery
	d.mu.Unlock()
	v.Enabled, v.Cgroup = true, d.sock.s.Cgroup()
	ids := d.vipIDs()
	cgroupIDs := map[uint64]bool{}
	for _, vs := range d.ctrl.Snapshot().State.VIPs {
		sv := SocketVIPView{Name: vs.Name, Key: vs.VIP.Key.String(), Clients: []socklb.Client{}}
		if c := d.socketCounters(ids, vs.VIP.Key); c != nil {
			sv.Counters = *c
		}
		if id, ok := ids[vs.VIP.Key]; ok {
			cs, other := d.sock.s.TopClients(id, topClients)
			sv.Clients, sv.Other = append(sv.Clients, cs...), other
			for _, c := range cs {
				cgroupIDs[c.CgroupID] = true
			}
		}
		v.VIPs = append(v.VIPs, sv)
	}
	sort.Slice(v.VIPs, func(i, j int) bool { return v.VIPs[i].Name < v.VIPs[j].Name })
	if len(cgroupIDs) > 0 {
		v.Cgroups = socklb.CgroupPaths(cgroupIDs)
	}
	return v
}

// socketMetrics exports the socket LB's per-VIP counters.
type socketMetrics struct {
	d                             *Daemon
	connects, sendmsgs, noBackend *prometheus.Desc
}

func newSocketMetrics(d *Daemon) *socketMetrics {
	return &socketMetrics{d: d,
		connects:  prometheus.NewDesc("l4lb_socket_connects_total", "connect() calls to a VIP that the socket LB sent to a backend.", []string{"vip"}, nil),
		sendmsgs:  prometheus.NewDesc("l4lb_socket_sendmsgs_total", "Unconnected UDP datagrams to a VIP that the socket LB sent to a backend.", []string{"vip"}, nil),
		noBackend: prometheus.NewDesc("l4lb_socket_no_backend_total", "connect() or sendmsg to a VIP left untouched: no backend of the socket's family.", []string{"vip"}, nil),
	}
}

func (m *socketMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.connects
	ch <- m.sendmsgs
	ch <- m.noBackend
}

func (m *socketMetrics) Collect(ch chan<- prometheus.Metric) {
	d := m.d
	if d.sock == nil {
		return
	}
	ids := d.vipIDs()
	for _, vs := range d.ctrl.Snapshot().State.VIPs {
		c := d.socketCounters(ids, vs.VIP.Key)
		if c == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.connects, prometheus.CounterValue, float64(c.Connects), vs.Name)
		ch <- prometheus.MustNewConstMetric(m.sendmsgs, prometheus.CounterValue, float64(c.Sendmsgs), vs.Name)
		ch <- prometheus.MustNewConstMetric(m.noBackend, prometheus.CounterValue, float64(c.NoBackend), vs.Name)
	}
}
