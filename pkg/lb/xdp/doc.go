// Package xdp owns the XDP fast path: it loads bpf/xdp_lb.c, programs VIPs, backends and
// Maglev rings into its maps, attaches it to an interface and reads its counters.
package xdp
