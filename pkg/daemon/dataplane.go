package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/iptables"
	"github.com/l4lb/l4lb/pkg/lb/ipvs"
	"github.com/l4lb/l4lb/pkg/lb/nft"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// newDataplane loads the configured data plane. It is the only place that names a
// concrete one. dataplane: auto tries xdp, then ipvs (only with ipvs.consider_in_auto),
// then nftables, then iptables, and logs what it chose and why (every mode tried, with
// what stopped it); an explicit mode that cannot work fails here with the reason.
func newDataplane(cfg *config.Config, logger *slog.Logger) (lb.Dataplane, error) {
	switch cfg.Dataplane {
	case "xdp":
		return loadXDP(cfg, logger, "configured (dataplane: xdp)")
	case "nftables":
		return loadNFT(cfg, logger, "configured (dataplane: nftables)")
	case "iptables":
		return loadIPTables(cfg, logger, "configured (dataplane: iptables)")
	case "auto":
		var why []string
		dp, err := loadXDP(cfg, logger, "auto: the xdp program loads on this kernel")
		if err == nil {
			logger.Info("dataplane chosen", "mode", "xdp", "reason", dp.Info().Reason)
			return dp, nil
		}
		why = append(why, "xdp: "+short(err))
		if cfg.IPVS.ConsiderInAuto {
			if ok, reason := ipvs.Available(); !ok {
				why = append(why, "ipvs: "+reason)
			} else if dp, err = newIPVS(cfg, logger, "auto: "+strings.Join(why, "; ")+"; ipvs works (ipvs.consider_in_auto)"); err == nil {
				logger.Warn("dataplane chosen", "mode", "ipvs", "reason", dp.Info().Reason)
				return dp, nil
			} else {
				why = append(why, "ipvs: "+short(err))
			}
		}
		dp, err = loadNFT(cfg, logger, "auto: "+strings.Join(why, "; ")+"; nftables NAT works")
		if err == nil {
			logger.Warn("dataplane chosen", "mode", "nftables", "reason", dp.Info().Reason)
			return dp, nil
		}
		why = append(why, "nftables: "+short(err))
		dp, err = loadIPTables(cfg, logger, "auto: "+strings.Join(why, "; ")+"; iptables NAT works")
		if err == nil {
			logger.Warn("dataplane chosen", "mode", "iptables", "reason", dp.Info().Reason)
			return dp, nil
		}
		why = append(why, "iptables: "+short(err))
		return nil, fmt.Errorf("dataplane auto: no data plane works here: %s: %w", strings.Join(why, "; "), ErrUnsupported)
	case "socket":
		return newSocketDataplane(cfg, logger)
	case "ipvs":
		return newIPVS(cfg, logger, "configured (dataplane: ipvs)")
	}
	return nil, fmt.Errorf("dataplane %q: %w", cfg.Dataplane, ErrUnsupported)
}

// short keeps the first line of an error, which is what a reason needs (the verifier log
// of a failed XDP load is long).
func short(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func loadXDP(cfg *config.Config, logger *slog.Logger, reason string) (lb.Dataplane, error) {
	d, err := xdp.Load(xdpOptions(cfg, logger))
	if err != nil {
		return nil, err
	}
	return xdp.NewNode(d, reason), nil
}

// ErrXDPLeft: a NAT mode was chosen on a node where an earlier run's XDP program is still
// attached; it would take the VIPs' packets before netfilter sees them.
var ErrXDPLeft = errors.New("an XDP program from an earlier run is still attached")

// checkNoXDP refuses a NAT mode while the configured bpffs directory pins XDP links.
func checkNoXDP(cfg *config.Config) error {
	links, _ := filepath.Glob(filepath.Join(cfg.BPFFS, "link_*"))
	if len(links) > 0 {
		return fmt.Errorf("%w (pinned in %s): run l4lb cleanup first", ErrXDPLeft, cfg.BPFFS)
	}
	return nil
}

// loadNFT: rings of the XDP ring size, so both modes pick the same backend for a flow.
func loadNFT(cfg *config.Config, logger *slog.Logger, reason string) (lb.Dataplane, error) {
	if err := checkNoXDP(cfg); err != nil {
		return nil, fmt.Errorf("dataplane nftables: %w", err)
	}
	d, err := nft.New(nft.Options{RingSize: cfg.XDP.RingSize, Reason: reason, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("dataplane nftables: %w", err)
	}
	return d, nil
}

func loadIPTables(cfg *config.Config, logger *slog.Logger, reason string) (lb.Dataplane, error) {
	if err := checkNoXDP(cfg); err != nil {
		return nil, fmt.Errorf("dataplane iptables: %w", err)
	}
	d, err := iptables.New(iptables.Options{Reason: reason, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("dataplane iptables: %w", err)
	}
	return d, nil
}

// watcher is a data plane that notices its rules being removed by someone else and asks
// the controller for a pass that writes them again.
type watcher interface {
	Watch(ctx context.Context, kick func()) error
}

// watchDataplane runs the data plane's watcher, if it has one, until ctx is done.
func watchDataplane(ctx context.Context, dp lb.Dataplane, kick func()) error {
	if w, ok := dp.(watcher); ok {
		return w.Watch(ctx, kick)
	}
	return nil
}

// cleanupNAT removes what the NAT data planes left (their table and chains), whichever
// mode ran: a node that fell back from one mode to another leaves nothing behind.
func cleanupNAT() ([]string, error) {
	var removed []string
	r, err1 := nft.Remove(0)
	removed = append(removed, r...)
	r, err2 := iptables.Remove()
	removed = append(removed, r...)
	return removed, errors.Join(err1, err2)
}

// idQuarantine is how long a deleted backend id is not given to another address: the UDP
// timeout (an idle UDP entry may name it that long) and a grace period of 30 s for
// packets that read a ring in flight and for TCP entries of flows that just ended.
func idQuarantine(cfg *config.Config) time.Duration {
	udp := cfg.XDP.UDPTimeout
	if udp == 0 {
		udp = xdp.DefaultUDPTimeout
	}
	return udp + 30*time.Second
}

// vipBackendPairs counts the configured (VIP, backend) pairs (XDP's vip_backends).
func vipBackendPairs(cfg *config.Config) int {
	n := 0
	for _, v := range cfg.VIPs {
		n += len(v.Backends)
	}
	return n
}

// ringSlots sizes the XDP rings array for the configured VIPs' ring sizes.
func ringSlots(cfg *config.Config) uint64 {
	sizes := make([]uint32, len(cfg.VIPs))
	for i, v := range cfg.VIPs {
		sizes[i] = v.EffectiveRingSize(cfg)
	}
	return xdp.RingSlotsFor(sizes)
}
