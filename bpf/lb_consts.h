/* lb_consts.h: compile-time sizes and protocol constants shared by the BPF programs.
 * Sizes are defaults; the Go loader may override map sizes at load time. */
#ifndef L4LB_CONSTS_H
#define L4LB_CONSTS_H

#ifndef MAX_VIPS
#define MAX_VIPS 16384
#endif

#ifndef MAX_BACKENDS
#define MAX_BACKENDS 4096
#endif

/* Default Maglev ring size (prime); a VIP may have its own. */
#ifndef RING_SIZE
#define RING_SIZE 65537
#endif

/* Ring slots are 16-bit backend ids packed RING_BLOCK_SLOTS to an entry of the flat rings
 * array (64 bytes: no per-entry rounding). RING_BLOCKS is the default size of that array
 * in entries; the loader sizes it from the configuration. */
#define RING_BLOCK_SLOTS 32
#ifndef RING_BLOCKS
#define RING_BLOCKS 8192
#endif

/* Conntrack: CT_SIZE flows in buckets of CT_WAYS ways (bpf/conntrack.h). */
#ifndef CT_SIZE
#define CT_SIZE 1048576
#endif
#define CT_WAYS 4
#define CT_BACKEND_MASK 0xffffULL
#define CT_REF (1ULL << 16)
#define CT_BUSY (1ULL << 17)
#define CT_EST (1ULL << 18)
/* Claim generation: bumped each time a way is claimed for a flow, so a reader that sees
 * the same backend and generation before and after reading the digest read one flow's
 * entry (a way rewritten twice, back to the same backend, reads as changed). */
#define CT_GEN_SHIFT 19
#define CT_GEN_MASK (0x1fffULL << CT_GEN_SHIFT) /* bits 19-31 */
/* What a reader compares before and after the digest: a touch (CT_REF, CT_EST, the time)
 * is not a rewrite. */
#define CT_CLAIM_MASK (CT_BACKEND_MASK | CT_GEN_MASK)
#define CT_SEEN_SHIFT 32
#define CT_TIME_SHIFT 24
/* Ranks of a way for a new flow (ct_victim), best first. */
#define CT_RANK_SAME 0
#define CT_RANK_EMPTY 1
#define CT_RANK_ONE_PACKET 2
#define CT_RANK_IDLE 3
#define CT_RANK_NONE 4

/* VIP membership (vip_backends): buckets of PAIR_WAYS (VIP id, backend id) pairs, one
 * cache line each; a pair's index (bucket * PAIR_WAYS + way) is its counters' index in
 * pair_stats. PAIR_BUCKETS is a default; the loader sizes the map (a power of two). */
#define PAIR_WAYS 16
#ifndef PAIR_BUCKETS
#define PAIR_BUCKETS 4096
#endif
#define PAIR_HASH_MUL 0x9e3779b1U

/* Per-interface next hop (nexthops): interfaces with an ifindex below this have an entry. */
#define MAX_IFINDEX 65536

/* ICMP too-big replies: per source prefix (/24, /48) and CPU, at most too_big_rate a
 * second (a load-time knob); TOO_BIG_SOURCES prefixes are tracked (LRU). */
#define TOO_BIG_SOURCES 65536

#ifndef MAX_LOCAL_VIPS
#define MAX_LOCAL_VIPS 1024
#endif

/* Outer source prefixes decap accepts, per family (allow_src4, allow_src6). */
#ifndef MAX_DECAP_ALLOW
#define MAX_DECAP_ALLOW 1024
#endif

/* How many IPv6 extension headers (hop-by-hop, routing, destination options) we skip. */
#define MAX_IPV6_EXT_HEADERS 4

#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD
#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8

#define PROTO_HOPOPTS 0
#define PROTO_ICMP 1
#define PROTO_IPIP 4
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_IPV6 41
#define PROTO_ROUTING 43
#define PROTO_FRAGMENT 44
#define PROTO_ICMPV6 58
#define PROTO_NONE 59
#define PROTO_DSTOPTS 60

#define FAMILY_V4 4
#define FAMILY_V6 6

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

#define TCPF_RST_ 0x04
#define TCPF_SYN_ 0x02

#define ICMP_DEST_UNREACH_ 3
#define ICMP_FRAG_NEEDED_ 4
#define ICMPV6_PKT_TOOBIG_ 2

#define IPV4_HDR_LEN 20
#define IPV6_HDR_LEN 40
#define OUTER_TTL 64

/* vip_meta.flags */
#define VIP_F_HASH_NO_SPORT (1U << 0)

/* Prefilter sizes: LPM tries allocate per entry (no preallocation). */
#ifndef DENY_SIZE
#define DENY_SIZE 2097152
#endif

#ifndef ALLOW_SIZE
#define ALLOW_SIZE 65536
#endif

/* prefilter_on flags */
#define PREFILTER_F_DENY4 (1U << 0)
#define PREFILTER_F_DENY6 (1U << 1)
#define PREFILTER_F_DENY4_DIR (1U << 2) /* deny4_dir is built: IPv4 lookups start there */

/* deny4_dir: one u16 entry per /24 (the top 24 bits of the source), four to a u64 array
 * value (entry i in bits 16*(i%4) of value i/4: a plain u16 array in memory on
 * little-endian hosts). Bits 0-4: 1 + the length of the longest listed prefix of length
 * <= 24 covering the whole /24 (0: none); bit 5+(L-25), for L in 25..32: a listed prefix
 * of length L lies inside the /24 (look it up in deny4_counts). 2^22 x 8 bytes = 32 MiB. */
#define DENY4_DIR_SIZE (1U << 22)
#define DENY4_DIR_LONG_SHIFT 5
#define DENY4_DIR_OWNER_MASK 0x1f

/* vip_policy.flags */
#define VIP_POLICY_F_ALLOW (1U << 0) /* only sources in allow_list may reach the VIP */

#define TCPF_FIN_ 0x01
#define TCPF_PSH_ 0x08
#define TCPF_ACK_ 0x10
#define TCPF_URG_ 0x20

/* backend.flags */
#define BACKEND_F_EXISTS (1U << 0)

/* Monitor (bpf/monitor.h). monitor_flags bits: */
#define MON_F_DROPS (1U << 0) /* report every drop (rate-limited) */
#define MON_F_FLOWS (1U << 1) /* report sampled forwarding decisions */
/* Bytes of the frame an event carries. */
#define MON_CAP 128
/* Default ring buffer size (bytes, a power of two of pages); the loader may set it. */
#ifndef MON_RING_SIZE
#define MON_RING_SIZE (1U << 20)
#endif
/* mon_event.type */
#define MON_T_DROP 1
#define MON_T_FLOW 2
/* mon_event.reason of a flow event */
#define MON_FLOW_NEW 1      /* a new flow hashed onto the ring, its entry written */
#define MON_FLOW_MISS 2     /* no conntrack entry for a packet that is not a SYN */
#define MON_FLOW_MOVED 3    /* the entry named a backend that left: re-hashed */
/* mon_event.flags */
#define MON_EF_VIP (1U << 0)
#define MON_EF_BACKEND (1U << 1)
#define MON_EF_PREV (1U << 2)

/* Trace (trace_mode; struct trace_record). */
#define TRACE_MAGIC 0x4c345452U /* "L4TR" */
/* trace_record.flags */
#define TRACE_F_VIP (1U << 0)          /* the packet matched a VIP */
#define TRACE_F_ALLOW (1U << 1)        /* the VIP has an allow list and the source is in it */
#define TRACE_F_SYN (1U << 2)          /* a SYN: conntrack is not looked up */
#define TRACE_F_CT_FOUND (1U << 3)     /* a conntrack entry was found */
#define TRACE_F_CT_FOLLOWED (1U << 4)  /* ... and the packet went to its backend */
#define TRACE_F_RING (1U << 5)         /* the ring was consulted */
#define TRACE_F_WRITE_NEW (1U << 6)    /* a real packet would write a new entry */
#define TRACE_F_WRITE_UPDATE (1U << 7) /* a real packet would rewrite the found entry */
/* trace_record.detail bits 2-3 */
#define TRACE_MOVED_GONE 1       /* the entry's backend no longer exists */
#define TRACE_MOVED_NOT_MEMBER 2 /* the VIP no longer has that backend */
#define TRACE_MOVED_EXPIRED 3    /* a UDP entry idle past the timeout */
#endif
