package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
)

// specFromConfig translates a validated configuration into the controller's model: the
// one place that knows both. A VIP's communities are bgp.communities followed by its own.
func specFromConfig(cfg *config.Config) (lb.Spec, error) {
	var spec lb.Spec
	for _, v := range cfg.VIPs {
		addr, err := netip.ParseAddr(v.Address)
		if err != nil {
			return lb.Spec{}, fmt.Errorf("vip %s: %w", v.Name, err)
		}
		proto, err := lb.ParseProto(v.Protocol)
		if err != nil {
			return lb.Spec{}, fmt.Errorf("vip %s: %w", v.Name, err)
		}
		sv := lb.Service{
			Name: v.Name, Key: lb.VIPKey{Addr: addr.Unmap(), Port: uint16(v.Port), Proto: proto}, MED: v.MED,
			Communities: slices.Concat(cfg.BGP.Communities, v.Communities),
			RingSize:    v.RingSize,
		}
		if v.HashNoSourcePort {
			sv.Flags |= lb.FlagHashNoSourcePort
		}
		if v.Forward == config.ForwardMasq {
			sv.Flags |= lb.FlagForwardMasq
		}
		for _, b := range v.Backends {
			ba, err := netip.ParseAddr(b.Address)
			if err != nil {
				return lb.Spec{}, fmt.Errorf("vip %s: backend: %w", v.Name, err)
			}
			w := uint32(config.DefaultWeight)
			if b.Weight != nil {
				w = uint32(*b.Weight)
			}
			sv.Backends = append(sv.Backends, lb.ServiceBackend{Addr: ba.Unmap(), Weight: w})
		}
		spec.Services = append(spec.Services, sv)
	}
	return spec, nil
}
