//go:build ignore

/* probe_tc.c: health probes that travel the data path. A tc egress program on the
 * interfaces the XDP program forwards by: a packet whose socket carries a probe mark
 * (probe_mark | probe id, set with SO_MARK by the daemon's checker) is addressed to a
 * VIP and leaves encapsulated to that backend exactly as forwarded traffic does (IPIP,
 * ip6ip6 or 4in6, the outer source from the same encap prefix), so the backend's decap,
 * its VIP on lo and its direct return are what the check proves. Every other packet
 * passes untouched. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "csum.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The probe marks: probe_mark in the high bits, the probe id (probe_targets) in the low
 * PROBE_ID_BITS. Set by the loader. */
volatile const __u32 probe_mark = 0x4c340000;
#define PROBE_ID_BITS 16
#define PROBE_ID_MASK ((1U << PROBE_ID_BITS) - 1)

/* Where each probe id's packets go: the backend's address and family (flags
 * BACKEND_F_EXISTS). Written by the daemon for the backends it checks through the tunnel;
 * its own, not the data plane's backend ids, so a check never waits for an id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1U << 16);
	__type(key, __u32);
	__type(value, struct backend);
} probe_targets SEC(".maps");

/* lb_cfg is the XDP program's (the encap source prefixes); the loader passes its map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_cfg SEC(".maps");

/* What the program did, per CPU (pkg/lb/probe reads them). */
enum probe_stat {
	PROBE_ENCAP4 = 0, /* encapsulated in IPv4 */
	PROBE_ENCAP6,     /* encapsulated in IPv6 */
	PROBE_NO_BACKEND, /* the mark names no probe target: dropped */
	PROBE_NO_SOURCE,  /* no encap source of the backend's family configured: dropped */
	PROBE_NOT_IP,     /* a marked packet that is neither IPv4 nor IPv6: dropped */
	PROBE_ADJUST,     /* the kernel refused the room for the outer header: dropped */
	PROBE_STATS,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PROBE_STATS);
	__type(key, __u32);
	__type(value, __u64);
} probe_stats SEC(".maps");

static __always_inline int count(__u32 id, int verdict)
{
	__u64 *c = bpf_map_lookup_elem(&probe_stats, &id);

	if (c)
		*c += 1;
	return verdict;
}

SEC("tc")
int probe_encap(struct __sk_buff *skb)
{
	__u32 mark = skb->mark;

	if ((mark & ~PROBE_ID_MASK) != probe_mark)
		return TC_ACT_OK;
	__u32 id = mark & PROBE_ID_MASK;
	struct backend *be = bpf_map_lookup_elem(&probe_targets, &id);

	if (!be || !(be->flags & BACKEND_F_EXISTS))
		return count(PROBE_NO_BACKEND, TC_ACT_SHOT);
	__u32 zero = 0;
	struct lb_config *cfg = bpf_map_lookup_elem(&lb_cfg, &zero);

	if (!cfg)
		return count(PROBE_NO_SOURCE, TC_ACT_SHOT);

	__u16 inner_proto = bpf_ntohs(skb->protocol);
	__u8 inner_v4;

	if (inner_proto == ETH_P_IP_)
		inner_v4 = 1;
	else if (inner_proto == ETH_P_IPV6_)
		inner_v4 = 0;
	else
		return count(PROBE_NOT_IP, TC_ACT_SHOT);
	int outer_v4 = be->family == FAMILY_V4;

	if (outer_v4 ? !cfg->has_src4 : !cfg->has_src6)
		return count(PROBE_NO_SOURCE, TC_ACT_SHOT);

	/* The inner packet as it stands: its length and TOS (traffic class). */
	__u32 inner_len = skb->len - sizeof(struct ethhdr);
	__u8 tos = 0;

	if (inner_v4) {
		struct iphdr ih;

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ih, sizeof(ih)))
			return count(PROBE_NOT_IP, TC_ACT_SHOT);
		tos = ih.tos;
	} else {
		__u8 w[2];

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), w, 2))
			return count(PROBE_NOT_IP, TC_ACT_SHOT);
		tos = (__u8)((w[0] << 4) | (w[1] >> 4));
	}
	__u32 hash = bpf_get_hash_recalc(skb);
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO |
		      (outer_v4 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV6);
	__u32 outer_len = outer_v4 ? IPV4_HDR_LEN : IPV6_HDR_LEN;

	if (bpf_skb_adjust_room(skb, outer_len, BPF_ADJ_ROOM_MAC, flags))
		return count(PROBE_ADJUST, TC_ACT_SHOT);

	if (outer_v4) {
		struct iphdr o = {};
		__u32 src = bpf_ntohl(*(__u32 *)cfg->src4);

		src = (src & ~cfg->src4_host_mask) | (hash & cfg->src4_host_mask);
		o.version = 4;
		o.ihl = 5;
		o.tos = tos;
		o.tot_len = bpf_htons(inner_len + IPV4_HDR_LEN);
		o.frag_off = bpf_htons(IP_DF);
		o.ttl = OUTER_TTL;
		o.protocol = inner_v4 ? PROTO_IPIP : PROTO_IPV6;
		o.saddr = bpf_htonl(src);
		__builtin_memcpy(&o.daddr, be->addr, 4);
		o.check = ipv4_hdr_csum((__u16 *)&o);
		if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &o, sizeof(o), 0))
			return count(PROBE_ADJUST, TC_ACT_SHOT);
	} else {
		struct ipv6hdr o = {};
		__u32 low = bpf_ntohl(*(__u32 *)&cfg->src6[12]);

		*(__be32 *)&o = bpf_htonl((6U << 28) | ((__u32)tos << 20) | (hash & 0xfffff));
		o.payload_len = bpf_htons(inner_len);
		o.nexthdr = inner_v4 ? PROTO_IPIP : PROTO_IPV6;
		o.hop_limit = OUTER_TTL;
		__builtin_memcpy(&o.saddr, cfg->src6, 16);
		low = (low & ~cfg->src6_host_mask) | (hash & cfg->src6_host_mask);
		o.saddr.in6_u.u6_addr32[3] = bpf_htonl(low);
		__builtin_memcpy(&o.daddr, be->addr, 16);
		if (bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &o, sizeof(o), 0))
			return count(PROBE_ADJUST, TC_ACT_SHOT);
	}
	if (outer_v4 != inner_v4) {
		__be16 p = bpf_htons(outer_v4 ? ETH_P_IP_ : ETH_P_IPV6_);

		if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &p, sizeof(p), 0))
			return count(PROBE_ADJUST, TC_ACT_SHOT);
	}
	return count(outer_v4 ? PROBE_ENCAP4 : PROBE_ENCAP6, TC_ACT_OK);
}
