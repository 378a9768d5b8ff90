package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

func newDecapCmd(logger *slog.Logger) *cobra.Command {
	var (
		iface string
		vips  []string
		every time.Duration
	)
	cmd := &cobra.Command{
		Use:   "decap --iface IF --vip ADDR [--vip ADDR...]",
		Short: "Decapsulate IPIP/ip6ip6/4in6 traffic to local VIPs on a backend (runs until interrupted)",
		Long: `decap attaches the backend-side XDP program to an interface. Encapsulated packets
whose inner destination is one of the given VIPs lose their outer header and go to the
kernel as if they had arrived plain; everything else passes untouched. Put the VIPs on lo.
It runs in the foreground and detaches when interrupted (SIGINT/SIGTERM).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addrs, err := parseVIPAddrs(vips)
			if err != nil {
				return err
			}
			if iface == "" {
				return fmt.Errorf("--iface is required")
			}
			d, err := xdp.LoadDecap()
			if err != nil {
				return err
			}
			defer d.Close()
			for _, a := range addrs {
				if err := d.AddVIP(a); err != nil {
					return err
				}
			}
			mode, err := d.Attach(iface)
			if err != nil {
				return err
			}
			log := logger.With("component", "decap")
			log.Info("decap attached", "iface", iface, "mode", mode, "vips", vips)
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-cmd.Context().Done():
					s, _ := d.Stats()
					log.Info("decap detached", "iface", iface, "counters", s)
					return nil
				case <-tick.C:
					if s, err := d.Stats(); err == nil {
						log.Info("decap counters", "counters", s)
					}
				}
			}
		},
	}
	cmd.Flags().StringVar(&iface, "iface", "", "interface encapsulated traffic arrives on")
	cmd.Flags().StringSliceVar(&vips, "vip", nil, "local VIP address (repeat or comma-separate)")
	cmd.Flags().DurationVar(&every, "log-every", time.Minute, "how often to log the counters")
	return cmd
}

func parseVIPAddrs(in []string) ([]netip.Addr, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("at least one --vip is required")
	}
	out := make([]netip.Addr, 0, len(in))
	for _, s := range in {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("--vip %q: %w", s, err)
		}
		out = append(out, a.Unmap())
	}
	return out, nil
}
