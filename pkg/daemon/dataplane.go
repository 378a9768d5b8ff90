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
	"github.com/l4lb/l4lb/pkg/lb/socklb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// newDataplane loads the configured data plane. It and newSocketLB (with newIPVS, ipvs.go)
// are the factory: only they construct concrete data planes, and the daemon holds what
// they return as lb.Dataplane and socketBalancer. dataplane: auto tries xdp, then ipvs
// (only with ipvs.consider_in_auto), then nftables, then iptables, and logs what it chose
// and why (every mode tried, with what stopped it); an explicit mode that cannot work
// fails here with the reason.
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

func xdpOptions(cfg *config.Config, logger *slog.Logger) xdp.Options {
	slots, _ := xdp.ParseSlotMapping(cfg.XDP.SlotMapping) // validated by config
	return xdp.Options{SlotMapping: slots,
		PinPath: cfg.BPFFS, RingSize: cfg.XDP.RingSize, ConntrackSize: cfg.XDP.ConntrackSize,
		UDPTimeout: cfg.XDP.UDPTimeout, MTU: cfg.XDP.MTU, Logger: logger, RingSlots: ringSlots(cfg),
		PairBuckets: xdp.PairBucketsFor(vipBackendPairs(cfg)),
	}
}

// socketCgroup is the configured cgroup, or the cgroup v2 root.
func socketCgroup(cfg *config.Config) (string, error) {
	if cfg.SocketLB.Cgroup != "" {
		return cfg.SocketLB.Cgroup, nil
	}
	return socklb.DefaultCgroup()
}

// loadSocketLB loads the socket LB over an XDP data plane's maps.
func loadSocketLB(cfg *config.Config, x *xdp.Dataplane, logger *slog.Logger) (*socklb.Dataplane, error) {
	s, err := socklb.Load(socklb.Options{PinPath: cfg.BPFFS, Shared: x.Shared(), SampleEvery: cfg.SocketLB.SampleEvery, Logger: logger})
	if err != nil {
		return nil, err
	}
	s.ResetOnNewVIP(x)
	return s, nil
}

// newSocketDataplane is dataplane: socket: the XDP maps loaded (never attached) and the
// socket LB over them.
func newSocketDataplane(cfg *config.Config, logger *slog.Logger) (lb.Dataplane, error) {
	cg, err := socketCgroup(cfg)
	if err != nil {
		return nil, err
	}
	x, err := xdp.Load(xdpOptions(cfg, logger))
	if err != nil {
		return nil, err
	}
	s, err := loadSocketLB(cfg, x, logger)
	if err != nil {
		x.Close()
		return nil, err
	}
	return socklb.NewNode(x, s, cg, "configured (dataplane: socket)"), nil
}

// newSocketLB finds or loads the socket LB for the configuration over the data plane dp:
// the data plane's own with dataplane: socket, one loaded over the XDP maps with
// socket_lb.enabled, else none (nil; the hooks a previous run pinned are removed).
func newSocketLB(cfg *config.Config, dp lb.Dataplane, logger *slog.Logger) (*socketLB, error) {
	if n, ok := dp.(*socklb.Node); ok {
		return &socketLB{s: n.Socket()}, nil
	}
	if !cfg.SocketLB.Enabled {
		// A previous run with socket LB left its hooks pinned: they would go on
		// balancing from the shared maps. Turning it off removes them.
		removed, err := socklb.RemovePinned(cfg.BPFFS)
		if len(removed) > 0 {
			logger.Info("socket lb is off: removed what a previous run pinned", "removed", removed)
		}
		return nil, err
	}
	n, ok := dp.(*xdp.Node)
	if !ok {
		return nil, fmt.Errorf("socket_lb: needs the xdp data plane's maps, not %s", dp.Info().Mode)
	}
	cg, err := socketCgroup(cfg)
	if err != nil {
		return nil, err
	}
	s, err := loadSocketLB(cfg, n.Dataplane(), logger)
	if err != nil {
		return nil, err
	}
	return &socketLB{s: s, extra: true, cgroup: cg}, nil
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
