package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Warnings lists what is valid but risky in a configuration that Validate accepts. Like
// Validate it is pure and names fields; LoadWithWarnings adds file and line. A warning
// never stops the node: `l4lb check` prints them and exits 0, the daemon logs them.
func Warnings(c *Config) []Problem {
	var ws []Problem
	warn := func(field, format string, args ...any) {
		ws = append(ws, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if host, _, err := net.SplitHostPort(c.Admin.Listen); err == nil && !loopbackHost(host) {
		clear := "state and metrics"
		if c.Admin.TokenFile != "" {
			clear = "state, metrics and the bearer token"
		}
		warn("admin.listen", "%s is not a loopback address: anyone who can reach it reads /v1/state and /metrics, "+
			"and the API speaks plain HTTP (%s cross the network in clear text); listen on 127.0.0.1 and put a TLS proxy in front",
			c.Admin.Listen, clear)
		if c.Admin.TokenFile == "" {
			warn("admin.token_file", "not set while admin.listen is not a loopback address: nothing on a network-facing API is authenticated (changes are refused, reads are open)")
		}
	}
	if c.Dataplane == "nftables" && c.XDP.SlotMapping != "scaled" {
		warn("dataplane", "nftables always maps a flow's hash to a ring slot by scaling; XDP nodes of the same fleet "+
			"pick the same backend for a flow only with xdp.slot_mapping: scaled on every node (here: %s)", c.XDP.SlotMapping)
	}
	for i, v := range c.VIPs {
		// Maglev keeps the imbalance between backends low when the ring has at least 100
		// slots per backend.
		if size, n := v.EffectiveRingSize(c), len(v.Backends); n > 0 && uint64(size) < 100*uint64(n) {
			field := fmt.Sprintf("vips[%d].ring_size", i)
			if v.RingSize == 0 {
				field = "xdp.ring_size"
			}
			warn(field, "vip %s: %d slots for %d backends, fewer than 100 per backend: shares may differ by more than a few percent; use a prime of at least %d",
				v.Name, size, n, 100*n)
		}
	}
	denyCovers(c, warn)
	return ws
}

// denyCovers warns for each prefilter.deny entry that covers a BGP peer or a backend.
func denyCovers(c *Config, warn func(string, string, ...any)) {
	var ps []netip.Prefix
	index := map[netip.Prefix]int{}
	for i, s := range c.Prefilter.Deny {
		if p, err := ParsePrefix(s); err == nil {
			if _, ok := index[p]; !ok {
				index[p] = i
				ps = append(ps, p)
			}
		}
	}
	covers := DenyCovers(ps, ProtectedAddrs(c))
	for _, p := range ps {
		if what := covers[p]; len(what) > 0 {
			warn(fmt.Sprintf("prefilter.deny[%d]", index[p]), "%s covers %s: the prefilter drops their packets "+
				"(a peer's BGP session, a backend's health-check answers)", p, strings.Join(what, ", "))
		}
	}
}

// loopbackHost says whether the host part of a listen address is a loopback address. An
// empty host, 0.0.0.0 or :: listens on every address; a host name other than localhost
// may resolve to anything.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
