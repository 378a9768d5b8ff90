package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/decap"
)

// errNoAllowFrom is what `l4lb decap` says when started as before --allow-from existed:
// it names the flag and what to give it, since a backend cannot guess its LBs' sources.
const errNoAllowFrom = "--allow-from is required: decap strips only packets whose outer source is one of " +
	"your load balancers; add one --allow-from per prefix they encapsulate from (each LB's " +
	"encap.source4 and encap.source6; in ipvs mode, the LB nodes' own addresses), " +
	"e.g. --allow-from 192.0.2.0/24 --allow-from 2001:db8:e::/64, or " +
	"--allow-from 0.0.0.0/0 --allow-from ::/0 to accept any outer source as before"

func newDecapCmd(logger *slog.Logger) *cobra.Command {
	var (
		iface string
		vips  []string
		allow []string
		every time.Duration
	)
	cmd := &cobra.Command{
		Use:   "decap --iface IF --vip ADDR [--vip ADDR...] --allow-from PREFIX [--allow-from PREFIX...]",
		Short: "Decapsulate IPIP/ip6ip6/4in6 traffic to local VIPs on a backend (runs until interrupted)",
		Long: `decap attaches the backend-side XDP program to an interface. Encapsulated packets
whose inner destination is one of the given VIPs and whose outer source is in an
--allow-from prefix lose their outer header and go to the kernel as if they had arrived
plain; encapsulated packets to a VIP from any other outer source are dropped and counted
(drop_source_not_allowed), since their inner source could be anything their sender wrote;
everything else passes untouched. Put the VIPs on lo.

--allow-from is required: give the prefixes your load balancers encapsulate from (each
LB's encap.source4 and encap.source6; in ipvs mode, the LB nodes' own addresses), IPv4
and IPv6 alike, as a prefix or a single address. A family with no --allow-from prefix is
never decapsulated. --allow-from 0.0.0.0/0 --allow-from ::/0 accepts any outer source (the
behaviour before the flag existed).

The outer header's ECN field is carried into the inner one as RFC 6040 says: CE outside
marks an ECN-capable inner packet CE (ecn_ce_from_outer); CE outside a not-ECT inner
packet drops it (drop_ecn_ce_not_ect).

It runs in the foreground, logs its counters every --log-every and detaches when
interrupted (SIGINT/SIGTERM).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addrs, err := parseVIPAddrs(vips)
			if err != nil {
				return err
			}
			if iface == "" {
				return fmt.Errorf("--iface is required")
			}
			prefixes, err := parseAllowFrom(allow)
			if err != nil {
				return err
			}
			d, err := decap.Load()
			if err != nil {
				return err
			}
			defer d.Close()
			for _, a := range addrs {
				if err := d.AddVIP(a); err != nil {
					return err
				}
			}
			for _, p := range prefixes {
				if err := d.AllowFrom(p); err != nil {
					return err
				}
			}
			log := logger.With("component", "decap")
			for _, p := range prefixes {
				if p.Bits() == 0 {
					log.Warn("decap accepts encapsulated packets from any outer source", "allow_from", p)
				}
			}
			mode, err := d.Attach(iface)
			if err != nil {
				return err
			}
			log.Info("decap attached", "iface", iface, "mode", mode, "vips", vips, "allow_from", prefixes)
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
	cmd.Flags().StringSliceVar(&allow, "allow-from", nil, "outer source prefix or address the load balancers encapsulate from (repeat or comma-separate; required)")
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

// parseAllowFrom reads the --allow-from values: prefixes, or addresses meaning themselves
// alone; v4-mapped IPv6 forms are taken as the IPv4 they map.
func parseAllowFrom(in []string) ([]netip.Prefix, error) {
	if len(in) == 0 {
		return nil, fmt.Errorf("%s", errNoAllowFrom)
	}
	out := make([]netip.Prefix, 0, len(in))
	n4, n6 := 0, 0
	for _, s := range in {
		p, err := parsePrefixOrAddr(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--allow-from %q: %w", s, err)
		}
		if p.Addr().Is4() {
			n4++
		} else {
			n6++
		}
		out = append(out, p)
	}
	if n4 > limits.MaxDecapAllow || n6 > limits.MaxDecapAllow {
		return nil, fmt.Errorf("--allow-from: %d ipv4 and %d ipv6 prefixes, at most %d of each", n4, n6, limits.MaxDecapAllow)
	}
	return out, nil
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("a v4-mapped prefix shorter than /96")
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}
