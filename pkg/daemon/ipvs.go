package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/ipvs"
)

// newIPVS opens the IPVS data plane with the ipvs keys; reason says why it was chosen.
func newIPVS(cfg *config.Config, logger *slog.Logger, reason string) (lb.Dataplane, error) {
	return ipvs.New(ipvs.Options{
		StateFile: cfg.IPVS.StateFile, Device: cfg.IPVS.VIPDevice, Resync: cfg.IPVS.ResyncInterval,
		Logger: logger, Reason: reason,
	})
}

// cleanupIPVS removes the virtual services, VIP device and state file a node in IPVS
// mode left (l4lb cleanup). Without a state file there is nothing of l4lb's in IPVS, and
// IPVS is not opened at all (a kernel without IPVS is fine).
func cleanupIPVS(cfg *config.Config) ([]string, error) {
	if cfg.IPVS.StateFile == "" {
		return nil, nil
	}
	if _, err := os.Stat(cfg.IPVS.StateFile); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	d, err := ipvs.New(ipvs.Options{StateFile: cfg.IPVS.StateFile, Device: cfg.IPVS.VIPDevice})
	if err != nil {
		return nil, fmt.Errorf("clean up ipvs: %w", err)
	}
	defer d.Close()
	return d.Cleanup()
}

// ipvsTable is the IPVS service table for /v1/state; nil unless the data plane is IPVS.
func (d *Daemon) ipvsTable() []ipvs.ServiceStatus {
	dp, ok := d.dp.(interface {
		Table() ([]ipvs.ServiceStatus, error)
	})
	if !ok {
		return nil
	}
	t, err := dp.Table()
	if err != nil {
		d.log.Warn("read the ipvs table", "error", err)
	}
	return t
}
