package daemon

import (
	"fmt"
	"log/slog"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// newDataplane loads the configured data plane. It is the only place that names a
// concrete one.
func newDataplane(cfg *config.Config, logger *slog.Logger) (lb.Dataplane, error) {
	switch cfg.Dataplane {
	case "xdp":
		d, err := xdp.Load(xdp.Options{
			PinPath: cfg.BPFFS, RingSize: cfg.XDP.RingSize, ConntrackSize: cfg.XDP.ConntrackSize,
			UDPTimeout: cfg.XDP.UDPTimeout, MTU: cfg.XDP.MTU, Logger: logger, RingSlots: ringSlots(cfg),
		})
		if err != nil {
			return nil, err
		}
		return xdp.NewNode(d, "configured (dataplane: xdp)"), nil
	}
	return nil, fmt.Errorf("dataplane %q: %w", cfg.Dataplane, ErrUnsupported)
}

// ringSlots sizes the XDP rings array for the configured VIPs' ring sizes.
func ringSlots(cfg *config.Config) uint64 {
	sizes := make([]uint32, len(cfg.VIPs))
	for i, v := range cfg.VIPs {
		sizes[i] = v.EffectiveRingSize(cfg)
	}
	return xdp.RingSlotsFor(sizes)
}
