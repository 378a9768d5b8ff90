/* lb_structs.h: the layout of every map key and value; mirrored in Go by bpf2go. */
#ifndef L4LB_STRUCTS_H
#define L4LB_STRUCTS_H

#include <linux/types.h>
#include "lb_consts.h"

/* A VIP: address (IPv4 in the first 4 bytes, rest zero), port (network order, 0 = any) and
 * protocol. family is FAMILY_V4 or FAMILY_V6. */
struct vip_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 family;
} __attribute__((aligned(4)));

struct vip_meta {
	__u32 id;    /* index into ring_sel and vip_stats (< MAX_VIPS); assigned by the loader */
	__u32 flags; /* VIP_F_* */
};

/* One half of a VIP's ring: RING_BLOCK_SLOTS-slot blocks of the flat rings array. */
struct ring_half {
	__u32 block; /* first entry of rings */
	__u32 size;  /* slots (a prime); 0: no ring */
};

/* Which ring a VIP reads, by VIP id. The loader writes the inactive half (rings, then
 * half[inactive]) and then flips active: each update changes bytes no reader uses, or
 * the one byte of active, so a reader sees the old ring or the new one, whole. */
struct ring_select {
	__u32 active; /* 0 or 1 */
	struct ring_half half[2];
};

/* RING_BLOCK_SLOTS ring slots: backend ids (0 = none). */
struct ring_block {
	__u16 slot[RING_BLOCK_SLOTS];
};

/* A VIP's backends: bucket (key * PAIR_HASH_MUL) >> (32 - log2 buckets), or the next
 * bucket, holds key = vip id << 16 | backend id (0: free; backend id 0 is never used). The
 * loader places pairs; the program only reads them. */
struct pair_bucket {
	__u32 key[PAIR_WAYS];
};

/* Next hop MAC for packets leaving by an interface (nexthops, by ifindex). */
struct nexthop {
	__u8 mac[6];
	__u8 set; /* 0: use lb_config */
	__u8 pad;
};

/* ICMP too-big rate limit state, per source prefix and CPU. */
struct too_big_key {
	__u8 prefix[8]; /* IPv4: the /24 in the first 3 bytes; IPv6: the /48 in the first 6 */
	__u8 family;
	__u8 pad[3];
};

struct too_big_window {
	__u64 window_ns; /* start of the current one-second window */
	__u64 count;     /* replies sent in the window */
};

/* A backend, indexed by its stable id (0 is never used). */
struct backend {
	__u8 addr[16];
	__u8 family;
	__u8 flags; /* BACKEND_F_EXISTS */
	__u16 pad;
} __attribute__((aligned(4)));

/* Conntrack key: the client's 5-tuple as it reaches the VIP. Ports in network order. */
struct flow_key {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;
	__u16 pad;
} __attribute__((aligned(4)));

/* Conntrack (bpf/conntrack.h): an array of buckets of CT_WAYS ways, one cache line each.
 * A way holds a flow's 64-bit digest and a state word: bits 0-15 the backend id (0: the
 * way is empty), bit 16 (CT_REF) a packet found it since its bucket was last full, bit 17
 * (CT_BUSY) being written, bit 18 (CT_EST) a packet ever found it, bits 19-31 (CT_GEN)
 * the claim generation, bits 32-63 the time of the last packet (UDP only) in units of
 * 2^24 ns. */
struct ct_way {
	__u64 digest;
	__u64 state;
};

struct ct_bucket {
	struct ct_way way[CT_WAYS];
};

/* Runtime settings that may change without reloading the program (one entry). */
struct lb_config {
	__u8 nexthop_mac[6]; /* all zero: send back to the MAC the packet came from */
	__u8 has_src4;
	__u8 has_src6;
	__u8 src4[4];         /* outer IPv4 source prefix (network bits) */
	__u32 src4_host_mask; /* host order; bits filled with per-flow entropy */
	__u8 src6[16];        /* outer IPv6 source prefix */
	__u32 src6_host_mask; /* host order; applied to the last 32 bits */
};

struct vip_counters {
	__u64 packets;
	__u64 bytes; /* IP bytes of the packet as received (outer headers not counted) */
	__u64 new_flows;
};

struct backend_counters {
	__u64 packets;
	__u64 bytes;
};

/* Named global counters; Go mirrors the names (pkg/lb/xdp/stats.go). */
enum stat_id {
	STAT_TX_ENCAP4 = 0,       /* encapsulated in IPv4 and transmitted */
	STAT_TX_ENCAP6,       /* encapsulated in IPv6 and transmitted */
	STAT_CT_HIT,          /* flow found in conntrack, backend still exists */
	STAT_CT_MISS,         /* new flow: hashed onto the ring */
	STAT_CT_REHASH,       /* conntrack pointed at a removed backend: re-hashed */
	STAT_CT_UDP_EXPIRED,  /* UDP entry idle past the timeout: re-hashed */
	STAT_CT_SKIP_RST,     /* TCP RST of an unknown flow: forwarded, no entry created */
	STAT_ICMP_TOO_BIG_FWD, /* ICMP frag-needed / packet-too-big sent to the flow's backend */
	STAT_PASS_NON_IP,     /* not IPv4/IPv6 (ARP, LLDP, ...) */
	STAT_PASS_NON_VIP,    /* IP traffic not addressed to a VIP */
	STAT_PASS_OTHER_PROTO, /* VIP address, protocol other than TCP/UDP/too-big ICMP */
	STAT_PASS_QINQ,       /* more than one VLAN tag */
	STAT_DROP_TRUNC_ETH,  /* frame shorter than an Ethernet (+VLAN) header */
	STAT_DROP_TRUNC_IP,   /* IP header (or total length) past the end of the frame */
	STAT_DROP_BAD_IP,     /* bad version, IHL < 5 or total length < header */
	STAT_DROP_TRUNC_L4,   /* TCP/UDP/ICMP header to a VIP address cut short */
	STAT_DROP_FRAGMENT,   /* IP fragment to a VIP address */
	STAT_DROP_IPV6_EXT,   /* too many / truncated IPv6 extension headers to a VIP address */
	STAT_DROP_NO_BACKEND, /* VIP with an empty ring or a ring slot naming no backend */
	STAT_DROP_FAMILY,     /* IPv6 packet for an IPv4 backend: not encapsulable */
	STAT_DROP_NO_SOURCE,  /* no outer source prefix configured for the backend's family */
	STAT_DROP_TOO_BIG,    /* packet would exceed the MTU once encapsulated */
	STAT_DROP_ICMP_BAD,   /* too-big ICMP to a VIP whose quoted packet is cut short */
	STAT_DROP_ADJUST,     /* bpf_xdp_adjust_head failed */
	STAT_DROP_DENY,       /* source address in the deny list (prefilter) */
	STAT_DROP_NOT_ALLOWED, /* source not in the VIP's allow list (prefilter) */
	STAT_DROP_TCP_FLAGS,  /* impossible TCP flag set to a VIP address */
	STAT_DROP_UDP_LEN,    /* UDP length < 8 or not the IP payload length, to a VIP address */
	STAT_GUARD_UNTRACKED, /* new flow above the VIP's guard rate: forwarded, no entry written */
	STAT_GUARD_DROP,      /* new flow above the VIP's guard drop rate: dropped */
	STAT_TX_ICMP_TOO_BIG, /* too big once encapsulated: ICMP frag-needed / packet-too-big sent back */
	STAT_CT_EVICTED,      /* a new flow's entry replaced an established flow's: both its buckets were full */
	STAT_CT_NOT_MEMBER,   /* conntrack named a backend its VIP no longer has: re-hashed */
	STAT_DROP_TOO_BIG_RATE, /* too big once encapsulated, its source prefix over the ICMP reply rate: dropped */
	STAT__MAX,
};

/* Prefilter: deny-list keys (LPM tries). prefixlen counts address bits. */
struct deny4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct deny6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Deny-list value: packets dropped by this prefix (all CPUs, atomic adds). */
struct deny_value {
	__u64 drops;
};

/* Per-VIP allow list key: prefixlen = 32 + address bits; vip_id is vip_meta.id. An IPv4
 * VIP's entries use the first 4 bytes of addr. */
struct allow_key {
	__u32 prefixlen;
	__u32 vip_id;
	__u8 addr[16];
};

/* Per-VIP policy, indexed by vip_meta.id; written by the loader before the VIP entry. */
struct vip_policy {
	__u32 flags;          /* VIP_POLICY_F_* */
	__u32 guard_rate;     /* new flows per second per CPU above which none is tracked; 0 = off */
	__u32 guard_drop_rate; /* new flows per second per CPU above which new flows drop; 0 = off */
	__u32 pad;
};

/* Per-VIP, per-CPU guard state and counters. */
struct vip_guard {
	__u64 window_ns; /* start of the current one-second window */
	__u64 count;     /* new flows in the window */
	__u64 untracked; /* new flows forwarded without a conntrack entry */
	__u64 dropped;   /* new flows dropped above the drop rate */
	__u64 denied;    /* packets dropped: source not in the allow list */
};

/* One event of the monitor ring buffer (bpf/monitor.h): a drop with its reason, or a
 * sampled forwarding decision. */
struct mon_event {
	__u64 ts_ns;           /* bpf_ktime_get_ns() */
	__u32 cpu;
	__u32 vip_id;          /* valid with MON_EF_VIP */
	__u32 backend_id;      /* valid with MON_EF_BACKEND */
	__u32 prev_backend_id; /* a moved flow's previous backend (MON_EF_PREV) */
	__u16 len;             /* frame length when the program decided */
	__u16 cap_len;         /* bytes of data[] filled */
	__u8 type;             /* MON_T_* */
	__u8 reason;           /* drop: the stat id; flow: MON_FLOW_* */
	__u8 tcp_flags;
	__u8 flags;            /* MON_EF_* */
	struct flow_key flow;  /* as parsed (an ICMP too-big: the quoted flow, reversed) */
	__u8 data[MON_CAP];
};

/* Per-CPU monitor state: the rate window and what was lost. */
struct mon_cpu {
	__u64 window_ns;
	__u64 count;       /* events in the current one-second window */
	__u64 sent;
	__u64 lost_rate;   /* over monitor_rate in its window */
	__u64 lost_ring;   /* the ring buffer had no room */
};

/* What the trace instance (trace_mode) writes into the frame's metadata: 32 bytes, the
 * most XDP metadata may hold. */
struct trace_record {
	__u32 magic;      /* TRACE_MAGIC once written */
	__u8 reason;      /* stat id of the verdict */
	__u8 flags;       /* TRACE_F_* */
	__u8 detail;      /* bits 0-1: the guard's answer (0 track, 1 untracked, 2 drop);
			   * bits 2-3: why a found entry was not followed (TRACE_MOVED_*) */
	__u8 action;      /* XDP_* */
	__u32 vip_id;     /* valid with TRACE_F_VIP */
	__u32 backend_id; /* the backend the packet went to; 0: none */
	__u64 ct_state;   /* the conntrack way's state (TRACE_F_CT_FOUND) */
	__u32 hash;       /* the flow's hash (TRACE_F_VIP) */
	__u32 slot;       /* the ring slot the hash picked (TRACE_F_RING) */
};

#endif
