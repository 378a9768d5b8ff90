package daemon

import (
	"context"
	"time"

	"github.com/l4lb/l4lb/pkg/lb"
)

// View is /v1/state: everything an operator asks about a node.
type View struct {
	Mode       string            `json:"mode"`
	Interfaces map[string]string `json:"interfaces"`
	NextHop    string            `json:"next_hop"`
	Ready      bool              `json:"ready"`
	LastApply  ApplyView         `json:"last_apply"`
	LastReload *reloadResult     `json:"last_reload,omitempty"`
	VIPs       []VIPView         `json:"vips"`
	BGP        *BGPView          `json:"bgp,omitempty"`
	Counters   map[string]uint64 `json:"counters"`
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
}

// BackendView is one backend of a VIP.
type BackendView struct {
	Address      string `json:"address"`
	ID           uint32 `json:"id"`
	Weight       uint32 `json:"weight"`
	ConfigWeight uint32 `json:"config_weight"`
	Healthy      bool   `json:"healthy"`
	Drained      bool   `json:"drained"`
	Packets      uint64 `json:"packets"`
	Bytes        uint64 `json:"bytes"`
}

// State implements admin.Node.
func (d *Daemon) State() any { return d.view() }

func (d *Daemon) view() View {
	st, last, _ := d.ctrl.State()
	d.mu.Lock()
	v := View{Mode: "xdp", Interfaces: map[string]string{}, Ready: d.ready, NextHop: d.nextHop.String()}
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
	v.LastApply = ApplyView{At: last.At, DurationMS: float64(last.Duration.Microseconds()) / 1000}
	if last.Err != nil {
		v.LastApply.Error = last.Err.Error()
	}
	ids, _ := d.dp.VIPs()
	for _, vs := range st.VIPs {
		vv := VIPView{Name: vs.Name, Key: vs.VIP.Key.String(), Up: vs.Up}
		if id, ok := ids[vs.VIP.Key]; ok {
			if c, err := d.dp.VIPCounters(id); err == nil {
				vv.Packets, vv.Bytes, vv.NewFlows = c.Packets, c.Bytes, c.NewFlows
			}
		}
		for _, b := range vs.Backends {
			bv := BackendView{Address: b.Addr.String(), ID: b.ID, Weight: b.Weight, ConfigWeight: b.ConfigWeight, Healthy: b.Healthy, Drained: b.Drained}
			if c, err := d.dp.BackendCounters(b.ID); err == nil {
				bv.Packets, bv.Bytes = c.Packets, c.Bytes
			}
			vv.Backends = append(vv.Backends, bv)
		}
		v.VIPs = append(v.VIPs, vv)
	}
	v.Counters, _ = d.dp.Stats()
	if d.ann != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		v.BGP = d.ann.status(ctx)
	}
	return v
}

var _ = lb.State{}
