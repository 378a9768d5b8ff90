package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"time"
)

// IPVS holds the IPVS data plane's settings (dataplane: ipvs).
type IPVS struct {
	// ConsiderInAuto lets dataplane: auto choose IPVS where the kernel has it. Off by
	// default: auto then never picks IPVS, so a node does not change to it by surprise.
	ConsiderInAuto bool `mapstructure:"consider_in_auto"`
	// VIPDevice is the dummy interface l4lb creates and puts the VIP addresses on, so
	// the kernel delivers VIP traffic locally, where IPVS intercepts it. Empty: the
	// operator makes the VIPs local (e.g. on lo).
	VIPDevice string `mapstructure:"vip_device"`
	// StateFile records the virtual services l4lb created (the ones it owns) and the
	// backend ids it gave out.
	StateFile string `mapstructure:"state_file"`
	// ResyncInterval: how often the kernel's table is compared with what l4lb
	// programmed; a service removed or changed behind its back is restored.
	ResyncInterval time.Duration `mapstructure:"resync_interval"`
}

// Defaults of the ipvs keys, and the values of vips[].forward.
const (
	DefaultIPVSDevice    = "l4lb-ipvs"
	DefaultIPVSStateFile = "/var/lib/l4lb/ipvs.json"
	DefaultIPVSResync    = 5 * time.Second
	ForwardTunnel        = "tunnel"
	ForwardMasq          = "masq"
)

// validateIPVS checks the ipvs keys and vips[].forward.
func validateIPVS(c *Config, bad func(field, format string, args ...any)) {
	if d := c.IPVS.VIPDevice; d != "" && (len(d) > 15 || strings.ContainsAny(d, "/ ")) {
		bad("ipvs.vip_device", "%q is not an interface name (at most 15 characters, no / or space)", d)
	}
	if c.IPVS.StateFile == "" || !filepath.IsAbs(c.IPVS.StateFile) {
		bad("ipvs.state_file", "%q: want an absolute path", c.IPVS.StateFile)
	}
	if c.IPVS.ResyncInterval <= 0 {
		bad("ipvs.resync_interval", "must be positive")
	}
	for i, v := range c.VIPs {
		f := fmt.Sprintf("vips[%d].forward", i)
		switch v.Forward {
		case "", ForwardTunnel:
		case ForwardMasq:
			switch c.Dataplane {
			case "xdp":
				bad(f, "masq needs dataplane ipvs (the xdp data plane always encapsulates)")
			case "socket":
				bad(f, "masq needs dataplane ipvs (the socket data plane connects sockets straight to backends)")
			}
			vip, err := netip.ParseAddr(v.Address)
			if err != nil {
				continue
			}
			for j, b := range v.Backends {
				if ba, err := netip.ParseAddr(b.Address); err == nil && ba.Unmap().Is4() != vip.Unmap().Is4() {
					bad(fmt.Sprintf("vips[%d].backends[%d].address", i, j), "%s: masq cannot translate between IPv4 and IPv6 (use forward: tunnel)", b.Address)
				}
			}
		default:
			bad(f, "%q: want tunnel or masq", v.Forward)
		}
	}
}
