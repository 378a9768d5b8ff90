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
			UDPTimeout: cfg.XDP.UDPTimeout, MTU: cfg.XDP.MTU, Logger: logger,
		})
		if err != nil {
			return nil, err
		}
		return xdp.NewNode(d, "configured (dataplane: xdp)"), nil
	case "ipvs":
		return newIPVS(cfg, logger, "configured (dataplane: ipvs)")
	}
	return nil, fmt.Errorf("dataplane %q: %w", cfg.Dataplane, ErrUnsupported)
}
