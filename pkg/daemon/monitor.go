package daemon

import (
	"context"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/socklb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
	"github.com/l4lb/l4lb/pkg/monitor"
)

// socketEvents is what the monitor asks of the socket LB (socketBalancer has it).
type socketEvents interface {
	SetMonitor(drops bool, rate uint32) error
	MonitorLost() (rateLimited, ringFull uint64, err error)
	SetEventSink(func(socklb.Event))
}

// monitorState carries the data plane's events to the hub the admin API's watchers
// subscribe to (GET /v1/monitor) and the status page reads (recent drops): the XDP
// program's, and the socket LB's when it runs.
type monitorState struct {
	hub *monitor.Hub
	// x is the XDP program whose events are read (nil with dataplane: socket, where it
	// never runs); ids names VIP and backend ids (the maps both programs share).
	x, ids *xdp.Dataplane
	sock   socketEvents // nil without the socket LB

	mu   sync.Mutex
	cfg  config.Monitor
	want monitor.Want
	// names: VIP names by key, refreshed at most once a second (events name their VIP).
	names   map[lb.VIPKey]string
	namesAt time.Time
}

// setupMonitor makes the hub; only the XDP program and the socket LB have events (nil
// hub otherwise: the NAT modes).
func (d *Daemon) setupMonitor(cfg *config.Config) {
	m := &monitorState{cfg: cfg.Monitor}
	switch n := d.dp.(type) {
	case *xdp.Node:
		m.x, m.ids = n.Dataplane(), n.Dataplane()
	case *socklb.Node:
		m.ids = n.Dataplane()
	default:
		return
	}
	m.hub = monitor.NewHub(cfg.Monitor.Recent)
	d.mon = m
	if d.sock != nil {
		m.sock = d.sock.s
		m.sock.SetEventSink(func(e socklb.Event) {
			m.mu.Lock()
			flows := m.want.Flows
			m.mu.Unlock()
			if e.Kind == socklb.KindNoBackend || flows {
				m.hub.Publish(d.socketEventOf(e))
			}
		})
	}
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

// apply writes what the configuration and the watchers ask for into the programs.
func (m *monitorState) apply(d *Daemon) {
	m.mu.Lock()
	s := xdp.MonitorSettings{Drops: m.cfg.Drops, Flows: m.want.Flows, SampleEvery: m.want.SampleEvery, Rate: m.cfg.Rate}
	m.mu.Unlock()
	if m.x != nil {
		if err := m.x.SetMonitor(s); err != nil {
			d.log.Warn("monitor settings not applied", "error", err)
		}
	}
	if m.sock != nil {
		if err := m.sock.SetMonitor(s.Drops, s.Rate); err != nil {
			d.log.Warn("socket lb monitor settings not applied", "error", err)
		}
	}
}

// lost sums what the programs could not send.
func (m *monitorState) lost() (monitor.Lost, error) {
	type source interface {
		MonitorLost() (rateLimited, ringFull uint64, err error)
	}
	var srcs []source
	if m.x != nil {
		srcs = append(srcs, m.x)
	}
	if m.sock != nil {
		srcs = append(srcs, m.sock)
	}
	var l monitor.Lost
	for _, src := range srcs {
		rate, ring, err := src.MonitorLost()
		if err != nil {
			return l, err
		}
		l.RateLimited += rate
		l.RingFull += ring
	}
	return l, nil
}

// Monitor is the hub of this node's events (nil: the data plane has none).
func (d *Daemon) Monitor() *monitor.Hub {
	if d.mon == nil {
		return nil
	}
	return d.mon.hub
}

// runMonitor reads the XDP program's events until ctx ends (the socket LB's come through
// its own reader and the sink), and every second hands the hub what the programs lost.
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
			if l, err := m.lost(); err == nil {
				m.hub.SetSourceLost(l)
			}
		}
	}()
	if m.x == nil {
		return nil
	}
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
	switch {
	case r.HasVIP:
		e.VIP = d.vipLabel(r.VIPID)
	case r.Flow.Dport != 0:
		// Dropped before the VIP lookup (the prefilter): named by the configured VIP it
		// was addressed to, so that --vip shows it.
		e.VIP = d.vipName(lb.VIPKey{Addr: r.Flow.Dst, Port: r.Flow.Dport, Proto: r.Flow.Proto})
	}
	if r.HasBackend {
		e.Backend = d.mon.ids.BackendOf(r.BackendID)
	}
	if r.HasPrevBackend {
		e.PrevBackend = d.mon.ids.BackendOf(r.PrevBackendID)
	}
	return e
}

// vipLabel is the configured name of the VIP with id, or its key when it has none.
func (d *Daemon) vipLabel(id uint32) string {
	k, ok := d.mon.ids.VIPOf(id)
	if !ok {
		return ""
	}
	if n := d.vipName(k); n != "" {
		return n
	}
	return k.String()
}

// socketEventOf is a socket LB event as the monitor shows it: the local program in place
// of a source address (a connect has none yet), the VIP the socket named as destination.
func (d *Daemon) socketEventOf(s socklb.Event) monitor.Event {
	e := monitor.Event{
		Time: s.Time, Source: "socket", CPU: s.CPU, Type: monitor.Flow, Reason: monitor.ReasonSockConnect,
		Proto: protoName(lb.Proto(s.Proto), s.VIP.Addr()), Dst: s.VIP, VIP: d.vipLabel(s.VIPID),
		Process: s.Comm + "[" + strconv.FormatUint(uint64(s.PID), 10) + "]",
	}
	if s.Kind == socklb.KindNoBackend {
		e.Type, e.Reason = monitor.Drop, monitor.ReasonSockNoBackend
	} else {
		e.Backend = d.mon.ids.BackendOf(s.BackendID)
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
