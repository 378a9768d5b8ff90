/* xdp_maps.h: the maps of the XDP fast path alone (bpf/xdp_lb.c): conntrack, counters,
 * membership, next hops and the prefilter's lists. All are pinned by name under the
 * bpffs directory the loader is given, so a restarted daemon adopts them. */
#ifndef L4LB_XDP_MAPS_H
#define L4LB_XDP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_consts.h"
#include "lb_structs.h"

/* Addresses that carry at least one VIP (port 0, proto 0 in the key): lets the program
 * tell "malformed packet to a VIP" (dropped) from "someone else's traffic" (passed). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_addrs SEC(".maps");

/* Conntrack (bpf/conntrack.h): shared by all CPUs, so an entry is still found if the NIC
 * moves a flow to another queue. The loader sets max_entries (buckets) from
 * xdp.conntrack_size and ct_buckets to the same number. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, CT_SIZE / CT_WAYS);
	__type(key, __u32);
	__type(value, struct ct_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT__MAX);
	__type(key, enum stat_id); /* puts the enum in BTF for bpf2go */
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_stats SEC(".maps");

/* Which backends each VIP has now, as (VIP id, backend id) pairs (lb_structs.h struct
 * pair_bucket): a conntrack entry is followed only to a backend its VIP still has. Sized
 * by the loader (buckets, a power of two). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PAIR_BUCKETS);
	__type(key, __u32);
	__type(value, struct pair_bucket);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_backends SEC(".maps");

/* Packets and bytes per (VIP, backend), by pair index (bucket * PAIR_WAYS + way). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PAIR_BUCKETS * PAIR_WAYS);
	__type(key, __u32);
	__type(value, struct backend_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pair_stats SEC(".maps");

/* Next hop MAC by the ifindex packets leave by (XDP_TX: the one they came in by). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_IFINDEX);
	__type(key, __u32);
	__type(value, struct nexthop);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nexthops SEC(".maps");

/* ICMP too-big replies sent, per source prefix and CPU, in the current second. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, TOO_BIG_SOURCES);
	__type(key, struct too_big_key);
	__type(value, struct too_big_window);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} too_big_rate_state SEC(".maps");

/* Prefilter: source deny lists, per-VIP allow lists and flood guard. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, DENY_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct deny4_key);
	__type(value, struct deny_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} deny4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, DENY_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct deny6_key);
	__type(value, struct deny_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} deny6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, ALLOW_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct allow_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} allow_list SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_policy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_policies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct vip_guard);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vip_guards SEC(".maps");

/* IPv4 deny list, flattened (DIR-24-8 style, see DENY4_DIR_* in lb_consts.h): the lookup
 * costs one array load, plus a hash lookup per prefix length present in the /24 when it
 * matches, whatever the list's size; deny4 stays the list of record. 32 MiB, mmapped by
 * the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DENY4_DIR_SIZE);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} deny4_dir SEC(".maps");

/* Every listed IPv4 prefix (masked address and length), with the drops deny4_dir decided
 * (a packet the trie answers counts in deny4's value); the list shows the sum. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DENY_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct deny4_key);
	__type(value, struct deny_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} deny4_counts SEC(".maps");

/* Which deny tries hold anything (PREFILTER_F_*), kept by the loader: an empty list costs
 * one array load instead of a trie lookup per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} prefilter_on SEC(".maps");

/* trace_mode (load-time): 1 only in the instance `l4lb trace` runs over the live maps with
 * BPF_PROG_TEST_RUN. It writes no map (no conntrack entry, no counter, no rate window),
 * so a trace never changes what a real flow gets, and reports its decision in the frame's
 * metadata (struct trace_record). The attached program has 0: the verifier removes every
 * branch taken on it. */
volatile const __u32 trace_mode = 0;

static __always_inline void stat_inc(__u32 id)
{
	if (trace_mode)
		return;
	__u64 *v = bpf_map_lookup_elem(&stats, &id);
	if (v)
		*v += 1;
}

#endif
