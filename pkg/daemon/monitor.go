package daemon

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
	"github.com/l4lb/l4lb/pkg/monitor"
)

// monitorState carries the XDP program's events to the hub the admin API's watchers
// subscribe to (GET /v1/monitor) and the status page reads (recent drops).
type monitorState struct {
	hub *monitor.Hub
	x   *xdp.Dataplane

	mu   sync.Mutex
	cfg  config.Monitor
	want monitor.Want
	// names: VIP names by key, refreshed at most once a second (events name their VIP).
	names   map[lb.VIPKey]string
	namesAt time.Time
}

// setupMonitor makes the hub; only the XDP data plane has events (nil hub otherwise).
func (d *Daemon) setupMonitor(cfg *config.Config) {
	n, ok := d.dp.(*xdp.Node)
	if !ok {
		return
	}
	m := &monitorState{hub: monitor.NewHub(cfg.Monitor.Recent), x: n.Dataplane(), cfg: cfg.Monitor}
	d.mon = m
	m.hub.OnWant(func(w monitor.Want) {
		m.mu.Lock()
		m.want = w
		m.mu.Unlock()
		m.apply(d)
	})
	m.apply(d)
}

// setMonitorConfig applies a reloaded monitor section.
func (d *Daemon) setMonitorConfig(c config.Monitor) {
	if d.mon == nil {
		return
	}
	d.mon.mu.Lock()
	d.mon.cfg = c
	d.mon.mu.Unlock()
	d.mon.apply(d)
}

// apply writes what the configuration and the watchers ask for into the program.
func (m *monitorState) apply(d *Daemon) {
	m.mu.Lock()
	s := xdp.MonitorSettings{Drops: m.cfg.Drops, Flows: m.want.Flows, SampleEvery: m.want.SampleEvery, Rate: m.cfg.Rate}
	m.mu.Unlock()
	if err := m.x.SetMonitor(s); err != nil {
		d.log.Warn("monitor settings not applied", "error", err)
	}
}

// Monitor is the hub of this node's events (nil: the data plane has none).
func (d *Daemon) Monitor() *monitor.Hub {
	if d.mon == nil {
		return nil
	}
	return d.mon.hub
}

// runMonitor reads the program's events until ctx ends, and every second hands the
// hub what the program lost.
func (d *Daemon) runMonitor(ctx context.Context) error {
	m := d.mon
	if m == nil {
		return nil
	}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			rate, ring, err := m.x.MonitorLost()
			if err == nil {
				m.hub.SetSourceLost(monitor.Lost{RateLimited: rate, RingFull: ring})
			}
		}
	}()
	// Forwarding goes on without its events: a failed reader is logged, not fatal.
	if err := m.x.ReadEvents(ctx, func(e xdp.RawEvent) { m.hub.Publish(d.eventOf(e)) }); err != nil {
		d.log.Error("monitor events stopped", "error", err)
	}
	return nil
}

// vipName is the configured name of the VIP with key k ("" if none).
func (d *Daemon) vipName(k lb.VIPKey) string {
	m := d.mon
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.names == nil || time.Since(m.namesAt) > time.Second {
		m.names, m.namesAt = d.vipNames(), time.Now()
	}
	return m.names[k]
}

// eventOf names an event's ids: the VIP by its configured name, backends by address.
func (d *Daemon) eventOf(r xdp.RawEvent) monitor.Event {
	e := monitor.Event{
		Time: r.Time, Source: "xdp", CPU: r.CPU, Type: r.Type, Reason: r.Reason,
		Proto: protoName(r.Flow.Proto, r.Flow.Src), TCPFlags: r.TCPFlags, Len: r.Len, Data: r.Data,
	}
	if r.Flow.Src.IsValid() {
		e.Src = netip.AddrPortFrom(r.Flow.Src, r.Flow.Sport)
		e.Dst = netip.AddrPortFrom(r.Flow.Dst, r.Flow.Dport)
	}
	if r.HasVIP {
		if k, ok := d.mon.x.VIPOf(r.VIPID); ok {
			if e.VIP = d.vipName(k); e.VIP == "" {
				e.VIP = k.String()
			}
		}
	}
	if r.HasBackend {
		e.Backend = d.mon.x.BackendOf(r.BackendID)
	}
	if r.HasPrevBackend {
		e.PrevBackend = d.mon.x.BackendOf(r.PrevBackendID)
	}
	return e
}

func protoName(p lb.Proto, src netip.Addr) string {
	switch p {
	case lb.ProtoTCP:
		return "tcp"
	case lb.ProtoUDP:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	case 0:
		if !src.IsValid() {
			return ""
		}
	}
	return strconv.Itoa(int(p))
}
