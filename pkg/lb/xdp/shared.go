package xdp

import (
	"reflect"

	"github.com/cilium/ebpf"
)

// Shared is what another BPF program needs to pick backends exactly as the XDP program
// does (connect-time socket LB): the forwarder's maps by ELF name, of which such a
// program declares those of bpf/lb_maps.h (vips, rings, ring_sel, backends). Each VIP's
// ring size is in ring_sel, so ring_pick() needs nothing else.
type Shared struct {
	Maps map[string]*ebpf.Map
}

// Shared returns this data plane's own map objects (the same ones, pinned or not), for
// ebpf.CollectionOptions.MapReplacements. They stay owned by d: closing d closes them.
func (d *Dataplane) Shared() Shared {
	s := Shared{Maps: map[string]*ebpf.Map{}}
	v := reflect.ValueOf(d.objs.xdplbMaps)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		name := t.Field(i).Tag.Get("ebpf")
		if m, ok := v.Field(i).Interface().(*ebpf.Map); ok && name != "" && m != nil {
			s.Maps[name] = m
		}
	}
	return s
}

// OnNewVIPID registers f, called (under the data plane's lock) when SetVIP gives a new
// VIP an id, after the id's own counters were zeroed: another program keeping per-VIP
// state by id (socket LB counters) resets it there.
func (d *Dataplane) OnNewVIPID(f func(id uint32) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.onNewID = append(d.onNewID, f)
}
