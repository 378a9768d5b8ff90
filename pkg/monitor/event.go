// Package monitor carries the data plane's events (drops with their reason, sampled
// forwarding decisions) from their source to every client watching: a hub that fans
// them out, filters, and the line, JSON and pcap forms the CLI prints.
package monitor

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Type is what an event reports.
type Type string

const (
	// Drop: the data plane dropped the packet; Reason says why.
	Drop Type = "drop"
	// Flow: a sampled forwarding decision (new flow, conntrack miss on a non-SYN, a flow
	// moved because its backend left); Reason says which.
	Flow Type = "flow"
)

// Flow reasons (Reason of a Flow event).
const (
	ReasonNewFlow    = "new_flow"     // a new flow hashed onto the ring, entry written
	ReasonMissNonSYN = "miss_non_syn" // no conntrack entry for a packet that is not a SYN
	ReasonMoved      = "moved"        // the flow's entry named a backend that left: re-hashed
	// ReasonSockConnect: a sampled connect the socket LB sent to a backend.
	ReasonSockConnect = "sock_connect"
)

// ReasonSockNoBackend (a Drop of source "socket"): a local connect or datagram to a VIP
// with no usable backend. The socket LB leaves it as it was: it takes the network path to
// the VIP (which no backend serves).
const ReasonSockNoBackend = "sock_no_backend"

// Event is one event of a data plane. Reason of a Drop event is the name of the counter
// the drop counts in (the data plane's counter names, e.g. "drop_deny"). Fields a source
// does not know are zero.
type Event struct {
	Time   time.Time `json:"time"`
	Source string    `json:"source"` // "xdp" or "socket"
	CPU    uint32    `json:"cpu"`
	Type   Type      `json:"type"`
	Reason string    `json:"reason"`
	Proto  string    `json:"proto"` // "tcp", "udp", "icmp", "icmpv6", or a number
	// TCPFlags are the TCP header's flags byte (0 for other protocols).
	TCPFlags uint8          `json:"tcp_flags,omitempty"`
	Src      netip.AddrPort `json:"src"`
	Dst      netip.AddrPort `json:"dst"`
	// VIP is the VIP's name in the configuration ("" when the packet matched none).
	VIP     string     `json:"vip,omitempty"`
	Backend netip.Addr `json:"backend,omitzero"`
	// PrevBackend is the backend a moved flow had.
	PrevBackend netip.Addr `json:"prev_backend,omitzero"`
	// Len is the frame's length on the wire; Data its first bytes (at most 128), from the
	// Ethernet header on, as the program saw them when it decided.
	Len  int    `json:"len"`
	Data []byte `json:"data,omitempty"`
	// Process is the local program a socket LB event is about, as "comm[pid]"; its
	// connect has no source address yet.
	Process string `json:"process,omitempty"`
}

// MonotonicOffset is what turns a program's bpf_ktime_get_ns (CLOCK_MONOTONIC) into wall
// time: add it and read as Unix nanoseconds.
func MonotonicOffset() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return time.Duration(time.Now().UnixNano() - ts.Nano())
}

// Lost counts events that never reached a watcher, by where they were lost.
type Lost struct {
	// RateLimited: over the per-CPU event rate in the data plane.
	RateLimited uint64 `json:"rate_limited"`
	// RingFull: the kernel's ring buffer had no room (the reader fell behind).
	RingFull uint64 `json:"ring_full"`
	// SlowClient: a watcher's queue was full; counted per hub, summed over watchers.
	SlowClient uint64 `json:"slow_client"`
}
