package config

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
)

// Prefilter is the XDP prefilter's node-wide part: the source-prefix deny list.
type Prefilter struct {
	// Deny lists source prefixes whose packets are dropped before any other work.
	Deny []string `mapstructure:"deny"`
	// DenyFiles name files of prefixes, one a line ('#' starts a comment), loaded with
	// Deny (a million prefixes load in seconds).
	DenyFiles []string `mapstructure:"deny_files"`
}

// Guard is a VIP's new-flow flood guard: above Rate new flows per second (per CPU) no
// conntrack entry is written for new flows; above DropRate they are dropped.
type Guard struct {
	Rate     uint32 `mapstructure:"new_flow_rate"`
	DropRate uint32 `mapstructure:"drop_rate"`
}

func validatePrefilter(c *Config, bad func(string, string, ...any)) {
	for i, s := range c.Prefilter.Deny {
		if _, err := ParsePrefix(s); err != nil {
			bad(fmt.Sprintf("prefilter.deny[%d]", i), "%v", err)
		}
	}
	for i, f := range c.Prefilter.DenyFiles {
		if !filepath.IsAbs(f) {
			bad(fmt.Sprintf("prefilter.deny_files[%d]", i), "%q: want an absolute path", f)
		}
	}
	for i, v := range c.VIPs {
		f := fmt.Sprintf("vips[%d]", i)
		vaddr, verr := netip.ParseAddr(v.Address)
		for j, s := range v.Allow {
			p, err := ParsePrefix(s)
			switch {
			case err != nil:
				bad(fmt.Sprintf("%s.allow[%d]", f, j), "%v", err)
			case verr == nil && p.Addr().Is4() != vaddr.Unmap().Is4():
				bad(fmt.Sprintf("%s.allow[%d]", f, j), "%s is not of the vip's address family", s)
			}
		}
		if g := v.Guard; g != nil {
			if g.Rate == 0 && g.DropRate == 0 {
				bad(f+".guard", "set new_flow_rate (and optionally drop_rate), or leave guard out")
			}
			if g.DropRate != 0 && g.DropRate <= g.Rate {
				bad(f+".guard.drop_rate", "%d: must be above new_flow_rate (%d)", g.DropRate, g.Rate)
			}
		}
	}
}

// ParsePrefix parses a deny or allow entry: a prefix, or an address (a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a prefix or an address", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a prefix", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write an ipv4-mapped prefix as ipv4", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (the prefix is %s)", s, p.Masked())
	}
	return p, nil
}

// ReadPrefixes reads a prefix file: one prefix or address a line, blank lines and '#'
// comments ignored. Errors name the file and line.
func ReadPrefixes(name string, r io.Reader) ([]netip.Prefix, error) {
	var out []netip.Prefix
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s, _, _ := strings.Cut(sc.Text(), "#")
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// Protected is an address the node talks to that a deny prefix must not cover: the
// prefilter drops packets by source, whatever their destination, so denying a BGP peer
// drops its session and denying a backend drops its health checks' answers.
type Protected struct {
	Addr netip.Addr
	What string // "bgp peer 192.0.2.1", "backend 198.51.100.11 (vip web)"
}

// ProtectedAddrs lists c's BGP peers (with BGP enabled) and backends, each address once.
func ProtectedAddrs(c *Config) []Protected {
	var out []Protected
	if c.BGP.Enabled {
		for _, p := range c.BGP.Peers {
			if a, err := netip.ParseAddr(p.Address); err == nil {
				out = append(out, Protected{Addr: a.Unmap(), What: "bgp peer " + a.Unmap().String()})
			}
		}
	}
	var order []netip.Addr
	vips := map[netip.Addr][]string{}
	for _, v := range c.VIPs {
		for _, b := range v.Backends {
			a, err := netip.ParseAddr(b.Address)
			if err != nil {
				continue
			}
			a = a.Unmap()
			if _, ok := vips[a]; !ok {
				order = append(order, a)
			}
			vips[a] = append(vips[a], v.Name)
		}
	}
	for _, a := range order {
		label := "vip"
		if len(vips[a]) > 1 {
			label = "vips"
		}
		out = append(out, Protected{Addr: a, What: fmt.Sprintf("backend %s (%s %s)", a, label, strings.Join(vips[a], ", "))})
	}
	return out
}

// DenyCovers returns, for each prefix of ps that covers addresses of addrs, what it
// covers, in the order of addrs. It costs one lookup per address and prefix length, not
// per prefix: a million prefixes are checked at once.
func DenyCovers(ps []netip.Prefix, addrs []Protected) map[netip.Prefix][]string {
	set := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		set[p] = true
	}
	out := map[netip.Prefix][]string{}
	for _, pa := range addrs {
		for bits := 0; bits <= pa.Addr.BitLen(); bits++ {
			if p := netip.PrefixFrom(pa.Addr, bits).Masked(); set[p] {
				out[p] = append(out[p], pa.What)
			}
		}
	}
	return out
}
