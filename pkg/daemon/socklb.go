package daemon

import (
	"context"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/socklb"
)

// topClients is how many local clients per VIP /v1/sockets lists.
const topClients = 10

// socketBalancer is what the daemon asks of the socket LB (pkg/lb/socklb): the factory
// (dataplane.go newSocketLB) gives it one.
type socketBalancer interface {
	Run(ctx context.Context) error
	Attach(cgroup string) error
	Detach() error
	Unpin() error
	Close() error
	Cgroup() string
	SampledTotal() uint64
	Counters(id uint32) (socklb.VIPCounters, error)
	TopClients(id uint32, n int) ([]socklb.Client, uint64)
	socketEvents
}

// socketLB is the part of the daemon that runs the socket LB beside XDP (socket_lb.enabled
// with dataplane: xdp). With dataplane: socket the data plane is the socket LB and this
// holds no extra program.
type socketLB struct {
	s      socketBalancer
	extra  bool   // loaded here beside XDP (else the data plane's own)
	cgroup string // where an extra one attaches
}

// setupSocketLB finds or loads the socket LB for the configuration.
func (d *Daemon) setupSocketLB(cfg *config.Config) error {
	sock, err := newSocketLB(cfg, d.dp, d.log)
	if err != nil || sock == nil {
		return err
	}
	d.sock = sock
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
