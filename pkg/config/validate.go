package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/l4lb/l4lb/internal/limits"
)

type vipKey struct {
	addr  netip.Addr
	port  int
	proto string
}

// Table limits of the XDP data plane, from internal/limits (generated from bpf/lb_consts.h).
const (
	// MaxVIPs is how many VIPs a configuration may have.
	MaxVIPs = limits.MaxVIPs
	// MaxBackends is how many distinct backend addresses a configuration may have (backend
	// ids 1..MaxBackends; the backends map has one slot more, id 0 being reserved).
	MaxBackends = limits.MaxBackends
)

// Validate checks a configuration without touching the system. It is pure: the same
// input gives the same problems. Fields are dotted paths (vips[0].backends[1].weight);
// Parse adds file and line.
func Validate(c *Config) []Problem {
	var ps []Problem
	bad := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}

	if len(c.Interfaces) == 0 && c.Dataplane != "socket" {
		bad("interfaces", "at least one interface is required")
	}
	for i, ifc := range c.Interfaces {
		if ifc == "" || len(ifc) > 15 || strings.ContainsAny(ifc, "/ ") {
			bad(fmt.Sprintf("interfaces[%d]", i), "%q is not an interface name", ifc)
		}
	}
	switch c.Dataplane {
	case "auto", "xdp", "nftables", "iptables", "socket", "ipvs":
	default:
		bad("dataplane", "%q: want auto, xdp, nftables, iptables, ipvs or socket", c.Dataplane)
	}
	if !filepath.IsAbs(c.BPFFS) {
		bad("bpffs", "%q: want an absolute path", c.BPFFS)
	}
	if c.StateFile != "" && !filepath.IsAbs(c.StateFile) {
		bad("state_file", "%q: want an absolute path", c.StateFile)
	}
	if c.DrainDelay < 0 {
		bad("drain_delay", "must not be negative")
	}
	if c.Monitor.Recent < 0 || c.Monitor.Recent > MaxMonitorRecent {
		bad("monitor.recent", "must be in 0..%d", MaxMonitorRecent)
	}
	if c.BGP.ReadyWait < 0 {
		bad("bgp.ready_wait", "must not be negative")
	}
	if c.NextHop.MAC != "" {
		if mac, err := net.ParseMAC(c.NextHop.MAC); err != nil || len(mac) != 6 {
			bad("nexthop.mac", "%q is not an Ethernet MAC address", c.NextHop.MAC)
		}
	} else if c.NextHop.Resolve <= 0 {
		bad("nexthop.resolve_interval", "must be positive when nexthop.mac is empty")
	}
	src4, src6 := checkPrefix(c.Encap.Source4, true, "encap.source4", bad), checkPrefix(c.Encap.Source6, false, "encap.source6", bad)
	if c.Dataplane == "socket" {
		src4, src6 = true, true // nothing is encapsulated: sockets connect to backends directly
	}

	if n := c.XDP.RingSize; n < limits.MinRingSize || n > limits.MaxRingSize || !isPrime(n) {
		bad("xdp.ring_size", "%d: want a prime from %d to %d (default %d)", n, limits.MinRingSize, limits.MaxRingSize, limits.DefaultRingSize)
	}
	if n := c.XDP.ConntrackSize; n < limits.MinConntrackSize || n > limits.MaxConntrackSize {
		bad("xdp.conntrack_size", "%d: want %d to %d (the table is allocated at load time, about %d bytes per entry)",
			n, limits.MinConntrackSize, limits.MaxConntrackSize, limits.ConntrackEntryBytes)
	}
	if c.XDP.UDPTimeout <= 0 {
		bad("xdp.udp_timeout", "must be positive")
	}
	if c.XDP.MTU < 576 || c.XDP.MTU > 65535 {
		bad("xdp.mtu", "%d: want 576 to 65535", c.XDP.MTU)
	}
	switch c.XDP.SlotMapping {
	case "modulo", "scaled":
	default:
		bad("xdp.slot_mapping", "%q: want modulo or scaled", c.XDP.SlotMapping)
	}
	if _, port, err := net.SplitHostPort(c.Admin.Listen); err != nil {
		bad("admin.listen", "%q: want host:port", c.Admin.Listen)
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		bad("admin.listen", "%q: want a port from 1 to 65535", c.Admin.Listen)
	}
	if c.Admin.TokenFile != "" && !filepath.IsAbs(c.Admin.TokenFile) {
		bad("admin.token_file", "%q: want an absolute path", c.Admin.TokenFile)
	}
	validateBGP(&c.BGP, bad)
	validateSocketLB(c, bad)
	validatePrefilter(c, bad)
	validateIPVS(c, bad)

	if len(c.VIPs) > MaxVIPs {
		bad("vips", "%d vips: at most %d", len(c.VIPs), MaxVIPs)
	}
	names := map[string]int{}
	keys := map[vipKey]int{}
	backends := map[netip.Addr]bool{}
	vipAddrs := map[netip.Addr]int{} // address -> first vip that has it
	for i, v := range c.VIPs {
		if a, err := netip.ParseAddr(v.Address); err == nil {
			if _, ok := vipAddrs[a.Unmap()]; !ok {
				vipAddrs[a.Unmap()] = i
			}
		}
	}
	for i, v := range c.VIPs {
		f := fmt.Sprintf("vips[%d]", i)
		if v.Name == "" {
			bad(f+".name", "required")
		} else if j, dup := names[v.Name]; dup {
			bad(f+".name", "%q already names vips[%d]", v.Name, j)
		} else {
			names[v.Name] = i
		}
		addr, err := netip.ParseAddr(v.Address)
		if err != nil {
			bad(f+".address", "%q is not an IP address", v.Address)
		} else if why := unusable(addr); why != "" {
			bad(f+".address", "%s %s: a vip must be a unicast address routed to this node", v.Address, why)
		}
		proto := strings.ToLower(v.Protocol)
		if proto != "tcp" && proto != "udp" {
			bad(f+".protocol", "%q: want tcp or udp", v.Protocol)
			proto = ""
		}
		if v.Port < 0 || v.Port > 65535 {
			bad(f+".port", "%d: want 0 (any port) to 65535", v.Port)
		} else if addr.IsValid() && proto != "" {
			k := vipKey{addr.Unmap(), v.Port, proto}
			if j, dup := keys[k]; dup {
				bad(f, "duplicate vip %s (also vips[%d])", net.JoinHostPort(k.addr.String(), fmt.Sprint(k.port))+"/"+proto, j)
			}
			keys[k] = i
		}
		if v.Health != nil {
			validateHealth(f+".health", *v.Health, true, bad)
		}
		for j, cm := range v.Communities {
			if !validCommunity(cm) {
				bad(fmt.Sprintf("%s.communities[%d]", f, j), "%q: want ASN:VALUE", cm)
			}
		}
		if len(v.Backends) == 0 {
			bad(f+".backends", "at least one backend is required")
		}
		if n := v.RingSize; n != 0 && (n < limits.MinRingSize || n > limits.MaxRingSize || !isPrime(n)) {
			bad(f+".ring_size", "%d: want a prime from %d to %d (or leave it out for xdp.ring_size)", n, limits.MinRingSize, limits.MaxRingSize)
		}
		seen := map[netip.Addr]int{}
		for j, b := range v.Backends {
			bf := fmt.Sprintf("%s.backends[%d]", f, j)
			ba, err := netip.ParseAddr(b.Address)
			if err != nil {
				bad(bf+".address", "%q is not an IP address", b.Address)
				continue
			}
			ba = ba.Unmap()
			if k, dup := seen[ba]; dup {
				bad(bf+".address", "%s already listed as backends[%d]", ba, k)
			}
			seen[ba] = j
			backends[ba] = true
			if why := unusable(ba); why != "" {
				bad(bf+".address", "%s %s: a backend must be a unicast address routed from this node", b.Address, why)
			} else if k, ok := vipAddrs[ba]; ok {
				bad(bf+".address", "%s is the address of vips[%d] (%s): encapsulated packets would come back to the load balancer", ba, k, c.VIPs[k].Name)
			}
			if b.Weight != nil && (*b.Weight < 0 || *b.Weight > MaxWeight) {
				bad(bf+".weight", "%d: want 0 (drained) to %d", *b.Weight, MaxWeight)
			}
			if addr.IsValid() && addr.Unmap().Is6() && ba.Is4() {
				bad(bf+".address", "ipv4 backend %s cannot carry ipv6 vip %s (no 6in4 encapsulation)", ba, addr)
			}
			if ba.Is4() && !src4 && c.Encap.Source4 == "" {
				bad(bf+".address", "ipv4 backend needs encap.source4")
			}
			if ba.Is6() && !src6 && c.Encap.Source6 == "" {
				bad(bf+".address", "ipv6 backend needs encap.source6")
			}
			if b.Health != nil {
				validateHealth(bf+".health", *b.Health, false, bad)
				if v.Health != nil {
					merged := *b.Health
					if merged.Type == "" {
						merged.Type = v.Health.Type
					}
					validateTLS(bf+".health", merged, bad)
				}
			}
		}
	}
	if len(backends) > MaxBackends {
		bad("vips", "%d distinct backends: at most %d", len(backends), MaxBackends)
	}
	return ps
}

var (
	broadcast   = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
)

// unusable says why a is no address that traffic can be load-balanced to or from, or ""
// if it is a unicast address that can be routed.
func unusable(a netip.Addr) string {
	if z := a.Zone(); z != "" {
		return "has a zone (%" + z + ")"
	}
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return "is the unspecified address"
	case a == broadcast:
		return "is the broadcast address"
	case thisNetwork.Contains(a):
		return "is in 0.0.0.0/8 (this network)"
	case a.IsLoopback():
		return "is a loopback address"
	case a.IsMulticast():
		return "is a multicast address"
	case a.IsLinkLocalUnicast():
		return "is a link-local address"
	}
	return ""
}

func checkPrefix(s string, v4 bool, field string, bad func(string, string, ...any)) bool {
	if s == "" {
		return false
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is4() != v4 || p.Addr().Is4In6() {
		fam := "ipv6"
		if v4 {
			fam = "ipv4"
		}
		bad(field, "%q is not an %s prefix", s, fam)
		return false
	}
	return true
}

func validateHealth(f string, h Health, full bool, bad func(string, string, ...any)) {
	switch h.Type {
	case "tcp", "http", "https", "udp":
	case "":
		if full {
			bad(f+".type", "required: tcp, http, https or udp")
		}
	default:
		bad(f+".type", "%q: want tcp, http, https or udp", h.Type)
	}
	if h.Interval < 0 || (h.Interval > 0 && h.Interval < 10*time.Millisecond) {
		bad(f+".interval", "%s: want at least 10ms", h.Interval)
	}
	if h.Timeout < 0 {
		bad(f+".timeout", "must not be negative")
	}
	if h.Interval > 0 && h.Timeout > h.Interval {
		bad(f+".timeout", "%s is longer than the interval %s", h.Timeout, h.Interval)
	}
	if h.Port < 0 || h.Port > 65535 {
		bad(f+".port", "%d: want 0 (the vip's port) to 65535", h.Port)
	}
	if h.Rise < 0 {
		bad(f+".rise", "must not be negative")
	}
	if h.Fall < 0 {
		bad(f+".fall", "must not be negative")
	}
	if h.ExpectStatus != 0 && (h.ExpectStatus < 100 || h.ExpectStatus > 599) {
		bad(f+".expect_status", "%d is not an HTTP status", h.ExpectStatus)
	}
	if h.Type == "udp" && h.Payload == "" && full {
		bad(f+".payload", "a udp check needs a payload to send")
	}
	switch h.Via {
	case "", ViaDirect, ViaTunnel:
	default:
		bad(f+".via", "%q: want direct (to the backend's address) or tunnel (to the vip, encapsulated as forwarded traffic)", h.Via)
	}
	// A backend's override is checked once merged (validateMergedHealth).
	if full {
		validateTLS(f, h, bad)
	}
}

// validateTLS: server_name and ca_file belong to https checks.
func validateTLS(f string, h Health, bad func(string, string, ...any)) {
	if h.Type == "https" {
		return
	}
	if h.ServerName != "" {
		bad(f+".server_name", "only an https check has a server name (type is %s)", h.Type)
	}
	if h.CAFile != "" {
		bad(f+".ca_file", "only an https check verifies a certificate (type is %s)", h.Type)
	}
}

func validateBGP(b *BGP, bad func(string, string, ...any)) {
	if !b.Enabled {
		return
	}
	if b.LocalASN == 0 {
		bad("bgp.local_asn", "required when bgp is enabled")
	}
	if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
		bad("bgp.router_id", "%q: want a non-zero ipv4 address", b.RouterID)
	}
	if b.ListenPort < -1 || b.ListenPort > 65535 {
		bad("bgp.listen_port", "%d: want -1 (do not listen), 0 (179) or a port up to 65535", b.ListenPort)
	}
	if len(b.Peers) == 0 {
		bad("bgp.peers", "at least one peer is required when bgp is enabled")
	}
	for i, p := range b.Peers {
		f := fmt.Sprintf("bgp.peers[%d]", i)
		if a, err := netip.ParseAddr(p.Address); err != nil {
			bad(f+".address", "%q is not an IP address", p.Address)
		} else if a = a.Unmap(); a.IsUnspecified() || a.IsMulticast() || a == broadcast {
			// Loopback (a local router, tests) and link-local (an IPv6 session on the
			// link, with a zone) are fine for a BGP session.
			bad(f+".address", "%s %s: want the peer's unicast address", p.Address, unusable(a))
		}
		if p.ASN == 0 {
			bad(f+".asn", "required")
		}
		if p.Port < 0 || p.Port > 65535 {
			bad(f+".port", "%d: want 1 to 65535 (0: 179)", p.Port)
		}
		if p.HoldTime != 0 && p.HoldTime < 3*time.Second {
			bad(f+".hold_time", "%s: want 0 or at least 3s", p.HoldTime)
		}
		if p.Keepalive != 0 && p.HoldTime != 0 && p.Keepalive >= p.HoldTime {
			bad(f+".keepalive", "%s must be shorter than the hold time %s", p.Keepalive, p.HoldTime)
		}
	}
	for i, c := range b.Communities {
		if !validCommunity(c) {
			bad(fmt.Sprintf("bgp.communities[%d]", i), "%q: want ASN:VALUE", c)
		}
	}
}

func validCommunity(c string) bool {
	_, err := ParseCommunity(c)
	return err == nil
}

// ParseCommunity parses a BGP community "ASN:VALUE" (both 0..65535) into ASN<<16 | VALUE.
func ParseCommunity(s string) (uint32, error) {
	a, v, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("community %q: want ASN:VALUE", s)
	}
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(v, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: want ASN:VALUE with both parts in 0..65535", s)
	}
	return uint32(hi)<<16 | uint32(lo), nil
}

func isPrime(n uint32) bool { return limits.IsPrime(n) }
