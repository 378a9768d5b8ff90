package daemon

import (
	"context"
	"time"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/ipvs"
	"github.com/l4lb/l4lb/pkg/lb/socklb"
)

// View is /v1/state: everything an operator asks about a node.
type View struct {
	Mode       string            `json:"mode"`
	ModeReason string            `json:"mode_reason"`
	Interfaces map[string]string `json:"interfaces"`
	NextHop    string            `json:"next_hop"`
	// NextHops: the next hop of each interface that has one of its own (its routes).
	NextHops   map[string]string `json:"next_hops,omitempty"`
	Ready      bool              `json:"ready"`
	LastApply  ApplyView         `json:"last_apply"`
	LastReload *reloadResult     `json:"last_reload,omitempty"`
	VIPs       []VIPView         `json:"vips"`
	BGP        *BGPView          `json:"bgp,omitempty"`
	Counters   map[string]uint64 `json:"counters"`
	SocketLB   *SocketLBView     `json:"socket_lb,omitempty"`
	// IPVS is the IPVS data plane's service table (dataplane: ipvs only).
	IPVS []ipvs.ServiceStatus `json:"ipvs,omitempty"`
}

// ApplyView is the controller's last pass.
type ApplyView struct {
	At         time.Time `json:"at"`
	DurationMS float64   `json:"duration_ms"`
	Error      string    `json:"error,omitempty"`
}

// VIPView is one VIP.
type VIPView struct {
	Name     string        `json:"name"`
	Key      string        `json:"key"`
	Up       bool          `json:"up"`
	Packets  uint64        `json:"packets"`
	Bytes    uint64        `json:"bytes"`
	NewFlows uint64        `json:"new_flows"`
	Backends []BackendView `json:"backends"`
	// Socket: the socket LB's counters (with socket LB only).
	Socket *socklb.VIPCounters `json:"socket,omitempty"`
}

// BackendView is one backend of a VIP.
type BackendView struct {
	Address      string `json:"address"`
	ID           uint32 `json:"id"`
	Weight       uint32 `json:"weight"`
	ConfigWeight uint32 `json:"config_weight"`
	Healthy      bool   `json:"healthy"`
	Drained      bool   `json:"drained"`
	// Packets and Bytes the data plane sent to this backend for this VIP; from a data
	// plane that counts per backend only (nftables, iptables) they are absent and
	// NodePackets says what the address received for all its VIPs.
	Packets     uint64 `json:"packets"`
	Bytes       uint64 `json:"bytes"`
	PerVIP      bool   `json:"per_vip"`
	NodePackets uint64 `json:"node_packets"`
	NodeBytes   uint64 `json:"node_bytes"`
	// Check is the health check that judges the backend (absent: none configured).
	Check *CheckView `json:"check,omitempty"`
}

// CheckView is a backend's health check as it runs: its type, the path it takes, where it
// connects, and how its last checks went.
type CheckView struct {
	Type string `json:"type"` // tcp, http, https, udp
	// Via is the path the check takes: "direct" (to the backend's own address) or
	// "tunnel" (to the VIP, encapsulated to the backend as forwarded traffic); ViaNote
	// says why a check configured with via: tunnel goes direct on this data plane.
	Via     string `json:"via"`
	ViaNote string `json:"via_note,omitempty"`
	Target  string `json:"target"` // what the probe connects to
	// LastAt: when the last check finished; LastRTTSeconds: how long the last successful
	// one took. LastError: the last failed check's error, kept after a success (compare
	// LastErrorAt with LastAt).
	LastAt         time.Time `json:"last_at,omitzero"`
	LastRTTSeconds float64   `json:"last_rtt_seconds"`
	LastError      string    `json:"last_error,omitempty"`
	LastErrorAt    time.Time `json:"last_error_at,omitzero"`
}

// State implements admin.Node.
func (d *Daemon) State() any { return d.view() }

func (d *Daemon) view() View {
	snap := d.ctrl.Snapshot()
	info := d.dp.Info()
	d.mu.Lock()
	v := View{Mode: info.Mode, ModeReason: info.Reason, Interfaces: map[string]string{}, Ready: d.ready, NextHop: d.nextHop.String()}
	if len(d.nextHops) > 0 {
		v.NextHops = map[string]string{}
		for ifc, mac := range d.nextHops {
			v.NextHops[ifc] = mac.String()
		}
	}
	for k, m := range d.links {
		v.Interfaces[k] = m
	}
	if !d.reload.At.IsZero() {
		r := d.reload
		v.LastReload = &r
	}
	d.mu.Unlock()
	if v.NextHop == "" {
		v.NextHop = "(back to sender)"
	}
	last := snap.Last
	v.LastApply = ApplyView{At: last.At, DurationMS: float64(last.Duration.Microseconds()) / 1000}
	if last.Err != nil {
		v.LastApply.Error = last.Err.Error()
	}
	counters, err := d.dp.Counters()
	if err != nil {
		d.log.Warn("read counters", "error", err)
	}
	var ids map[lb.VIPKey]uint32
	if d.sock != nil {
		ids = d.vipIDs()
	}
	for _, vs := range snap.State.VIPs {
		c := counters.VIPs[vs.VIP.Key]
		vv := VIPView{Name: vs.Name, Key: vs.VIP.Key.String(), Up: vs.Up, Packets: c.Packets, Bytes: c.Bytes, NewFlows: c.NewFlows}
		vv.Socket = d.socketCounters(ids, vs.VIP.Key)
		per, perVIP := counters.VIPBackends[vs.VIP.Key]
		for _, b := range vs.Backends {
			node := counters.Backends[b.ID]
			bv := BackendView{Address: b.Addr.String(), ID: b.ID, Weight: b.Weight, ConfigWeight: b.ConfigWeight,
				Healthy: b.Healthy, Drained: b.Drained, PerVIP: perVIP, NodePackets: node.Packets, NodeBytes: node.Bytes}
			if perVIP {
				bv.Packets, bv.Bytes = per[b.ID].Packets, per[b.ID].Bytes
			}
			bv.Check = d.checkView(vs.Name, b.Addr)
			vv.Backends = append(vv.Backends, bv)
		}
		v.VIPs = append(v.VIPs, vv)
	}
	v.Counters = counters.Global
	v.SocketLB = d.socketView()
	v.IPVS = d.ipvsTable()
	if d.ann != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		v.BGP = d.ann.status(ctx)
	}
	return v
}
