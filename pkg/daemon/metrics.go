package daemon

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/internal/buildinfo"
)

type metrics struct {
	d                 *Daemon
	healthTransitions prometheus.Counter
	healthRTT         *prometheus.HistogramVec
	healthFailures    *prometheus.CounterVec
	reloads           *prometheus.CounterVec
	applyDuration     prometheus.Histogram
	applyErrors       prometheus.Counter
	applyWritten      prometheus.Histogram

	vipPackets, vipBytes, vipNewFlows  *prometheus.Desc
	bePackets, beBytes, beUp, beWeight *prometheus.Desc
	vipBePackets, vipBeBytes           *prometheus.Desc
	events, drops, conntrack, mode     *prometheus.Desc
	bgpUp, bgpChanges, bgpAnnounced    *prometheus.Desc
}

func newMetrics(reg *prometheus.Registry, d *Daemon) *metrics {
	m := &metrics{
		d:                 d,
		healthTransitions: prometheus.NewCounter(prometheus.CounterOpts{Name: "l4lb_health_transitions_total", Help: "Backend health transitions (up or down)."}),
		healthRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "l4lb_health_check_rtt_seconds",
			Help:    "Round trip of successful health checks (connect and exchange), by the path they took (direct, tunnel).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}, []string{"vip", "backend", "via"}),
		healthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "l4lb_health_check_failures_total",
			Help: "Failed health checks, by the path they took (direct, tunnel)."}, []string{"vip", "backend", "via"}),
		reloads:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "l4lb_reloads_total", Help: "Configuration reloads by result (applied, rejected)."}, []string{"result"}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "l4lb_apply_duration_seconds", Help: "Controller pass duration.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		applyErrors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "l4lb_apply_errors_total", Help: "Controller passes that failed (retried with backoff)."}),
		applyWritten:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "l4lb_apply_vips_written", Help: "VIPs (rings) written per controller pass that changed something.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		vipPackets:    prometheus.NewDesc("l4lb_vip_packets_total", "Packets forwarded for a VIP.", []string{"vip"}, nil),
		vipBytes:      prometheus.NewDesc("l4lb_vip_bytes_total", "IP bytes forwarded for a VIP.", []string{"vip"}, nil),
		vipNewFlows:   prometheus.NewDesc("l4lb_vip_new_flows_total", "Flows a VIP placed on a backend by its ring: new flows, and flows whose entry was lost or whose backend left (tracked or, under the guard, not).", []string{"vip"}, nil),
		bePackets:     prometheus.NewDesc("l4lb_backend_packets_total", "Packets sent to a backend address, for all its VIPs.", []string{"backend"}, nil),
		beBytes:       prometheus.NewDesc("l4lb_backend_bytes_total", "IP bytes sent to a backend address, for all its VIPs.", []string{"backend"}, nil),
		vipBePackets:  prometheus.NewDesc("l4lb_vip_backend_packets_total", "Packets sent to a backend for one VIP (data planes that count per VIP and backend: xdp, ipvs).", []string{"vip", "backend"}, nil),
		vipBeBytes:    prometheus.NewDesc("l4lb_vip_backend_bytes_total", "IP bytes sent to a backend for one VIP (xdp, ipvs).", []string{"vip", "backend"}, nil),
		beUp:          prometheus.NewDesc("l4lb_backend_up", "1 if the backend passes its health check for the VIP.", []string{"vip", "backend"}, nil),
		beWeight:      prometheus.NewDesc("l4lb_backend_weight", "Effective weight of the backend in the VIP's ring (0: drained or down).", []string{"vip", "backend"}, nil),
		events:        prometheus.NewDesc("l4lb_xdp_packets_total", "XDP program outcomes by counter name.", []string{"counter"}, nil),
		drops:         prometheus.NewDesc("l4lb_drops_total", "Packets dropped by reason.", []string{"reason"}, nil),
		conntrack:     prometheus.NewDesc("l4lb_conntrack_lookups_total", "Conntrack lookups by result (hit, miss, rehash, udp_expired).", []string{"result"}, nil),
		mode:          prometheus.NewDesc("l4lb_dataplane_info", "The data plane mode in use and why it was chosen (1).", []string{"mode", "reason"}, nil),
		bgpUp:         prometheus.NewDesc("l4lb_bgp_session_up", "1 while the BGP session to the peer is established.", []string{"peer"}, nil),
		bgpChanges:    prometheus.NewDesc("l4lb_bgp_session_changes_total", "BGP session state changes per peer.", []string{"peer"}, nil),
		bgpAnnounced:  prometheus.NewDesc("l4lb_bgp_announced_prefixes", "VIP prefixes announced now.", nil, nil),
	}
	m.reloads.WithLabelValues("applied")
	m.reloads.WithLabelValues("rejected")
	bi := buildinfo.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{Name: "l4lb_build_info", Help: "The running l4lb's version (1).",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Revision, "goversion": bi.GoVersion}})
	build.Set(1)
	reg.MustRegister(m.healthTransitions, m.healthRTT, m.healthFailures, m.reloads, m.applyDuration, m.applyErrors, m.applyWritten, build, m)
	return m
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.vipPackets, m.vipBytes, m.vipNewFlows, m.bePackets, m.beBytes, m.vipBePackets, m.vipBeBytes, m.beUp, m.beWeight, m.events, m.drops, m.conntrack, m.mode, m.bgpUp, m.bgpChanges, m.bgpAnnounced} {
		ch <- d
	}
}

// Collect reads the per-CPU maps at scrape time.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	v := m.d.view()
	ch <- prometheus.MustNewConstMetric(m.mode, prometheus.GaugeValue, 1, v.Mode, v.ModeReason)
	seen := map[string]bool{}
	for _, vip := range v.VIPs {
		ch <- prometheus.MustNewConstMetric(m.vipPackets, prometheus.CounterValue, float64(vip.Packets), vip.Name)
		ch <- prometheus.MustNewConstMetric(m.vipBytes, prometheus.CounterValue, float64(vip.Bytes), vip.Name)
		ch <- prometheus.MustNewConstMetric(m.vipNewFlows, prometheus.CounterValue, float64(vip.NewFlows), vip.Name)
		for _, b := range vip.Backends {
			up := 0.0
			if b.Healthy {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(m.beUp, prometheus.GaugeValue, up, vip.Name, b.Address)
			ch <- prometheus.MustNewConstMetric(m.beWeight, prometheus.GaugeValue, float64(b.Weight), vip.Name, b.Address)
			if !seen[b.Address] {
				seen[b.Address] = true
				ch <- prometheus.MustNewConstMetric(m.bePackets, prometheus.CounterValue, float64(b.NodePackets), b.Address)
				ch <- prometheus.MustNewConstMetric(m.beBytes, prometheus.CounterValue, float64(b.NodeBytes), b.Address)
			}
			if b.PerVIP {
				ch <- prometheus.MustNewConstMetric(m.vipBePackets, prometheus.CounterValue, float64(b.Packets), vip.Name, b.Address)
				ch <- prometheus.MustNewConstMetric(m.vipBeBytes, prometheus.CounterValue, float64(b.Bytes), vip.Name, b.Address)
			}
		}
	}
	if b := v.BGP; b != nil {
		ch <- prometheus.MustNewConstMetric(m.bgpAnnounced, prometheus.GaugeValue, float64(len(b.Announced)))
		for _, p := range b.Peers {
			up := 0.0
			if p.Established {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(m.bgpUp, prometheus.GaugeValue, up, p.Address)
			ch <- prometheus.MustNewConstMetric(m.bgpChanges, prometheus.CounterValue, float64(b.changes[p.Address]), p.Address)
		}
	}
	for name, n := range v.Counters {
		ch <- prometheus.MustNewConstMetric(m.events, prometheus.CounterValue, float64(n), name)
		if r, ok := strings.CutPrefix(name, "drop_"); ok {
			ch <- prometheus.MustNewConstMetric(m.drops, prometheus.CounterValue, float64(n), r)
		}
		if r, ok := strings.CutPrefix(name, "ct_"); ok && r != "skip_rst" && r != "evicted" {
			ch <- prometheus.MustNewConstMetric(m.conntrack, prometheus.CounterValue, float64(n), r)
		}
	}
}
