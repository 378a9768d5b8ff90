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
