//go:build ignore

/* decap.c: backend-side XDP program. Strips an outer IPv4 (IPIP) or IPv6 (ip6ip6, 4in6)
 * header when the inner destination is one of this host's VIPs (local_vips) and the outer
 * source is in an allowed prefix (allow_src4 / allow_src6: the load balancers' encap
 * sources), then passes the inner packet to the kernel. The outer ECN field is combined
 * into the inner one as RFC 6040 (normal mode) says. Encapsulated packets to a local VIP
 * from any other outer source are dropped: they would reach the VIP as if they came from
 * whatever inner source their sender wrote. Everything else passes untouched. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "lb_structs.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

enum decap_stat_id {
	DECAP_STAT_OK = 0,        /* outer header stripped, inner packet passed */
	DECAP_STAT_PASS_NOT_ENCAP, /* not IPIP / ip6ip6 / 4in6: passed untouched */
	DECAP_STAT_PASS_NOT_LOCAL, /* encapsulated, but the inner destination is no local VIP */
	DECAP_STAT_DROP_MALFORMED, /* encapsulated, but outer or inner header cut short */
	DECAP_STAT_PASS_FRAGMENT, /* outer IPv4 fragment: left to the kernel */
	DECAP_STAT_DROP_ADJUST,   /* bpf_xdp_adjust_head failed */
	DECAP_STAT_DROP_SOURCE,   /* to a local VIP, but the outer source is not allowed */
	DECAP_STAT_DROP_ECN,      /* outer CE on a not-ECT inner packet (RFC 6040: drop) */
	DECAP_STAT_ECN_CE,        /* outer CE copied into an ECT inner packet (also decap_ok) */
	DECAP_STAT__MAX,
};

struct vlan_hdr_ {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* Local VIP addresses: key addr + family, port and proto zero. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_LOCAL_VIPS);
	__type(key, struct vip_key);
	__type(value, __u32);
} local_vips SEC(".maps");

/* Outer sources allowed to reach local VIPs (LPM; value unused). Empty: none is. */
struct decap_src4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct decap_src6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_DECAP_ALLOW);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct decap_src4_key);
	__type(value, __u32);
} allow_src4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_DECAP_ALLOW);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct decap_src6_key);
	__type(value, __u32);
} allow_src6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_STAT__MAX);
	__type(key, enum decap_stat_id);
	__type(value, __u64);
} decap_stats SEC(".maps");

static __always_inline int count(__u32 id, int action)
{
	__u64 *v = bpf_map_lookup_elem(&decap_stats, &id);

	if (v)
		*v += 1;
	return action;
}

/* csum_replace16 is an IPv4 header checksum after one 16-bit word of the header changed
 * from old to new (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')); all in network order. */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u32)(__u16)~check + (__u16)~old + new;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

#define ECN_NOT_ECT 0
#define ECN_ECT1 1
#define ECN_ECT0 2
#define ECN_CE 3

/* ecn_decap is RFC 6040's decapsulation table (section 4.2, normal mode): the ECN field
 * the inner header leaves with, or -1 for a packet that must be dropped (CE outside, an
 * inner transport that cannot be told of congestion). */
static __always_inline int ecn_decap(__u8 inner, __u8 outer)
{
	if (inner == ECN_NOT_ECT)
		return outer == ECN_CE ? -1 : ECN_NOT_ECT;
	if (outer == ECN_CE)
		return ECN_CE;
	if (inner == ECN_ECT0 && outer == ECN_ECT1)
		return ECN_ECT1;
	return inner;
}

SEC("xdp")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 l2_len = sizeof(*eth);
	__be16 proto;
	__be16 vlan_tci = 0;
	__be16 vlan_tpid = 0;

	if ((void *)(eth + 1) > data_end)
		return count(DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		struct vlan_hdr_ *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return count(DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
		vlan_tpid = proto;
		vlan_tci = vh->tci;
		proto = vh->encapsulated_proto;
		l2_len += sizeof(*vh);
	}

	__u32 outer_len;
	__u8 inner_proto;
	__u8 outer_ecn;
	struct decap_src4_key s4 = {.prefixlen = 32};
	struct decap_src6_key s6 = {.prefixlen = 128};
	int outer_v6 = 0;

	if (proto == bpf_htons(ETH_P_IP_)) {
		struct iphdr *o = data + l2_len;

		if ((void *)(o + 1) > data_end)
			return count(DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
		if (o->protocol != PROTO_IPIP && o->protocol != PROTO_IPV6)
			return count(DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
		if (o->version != 4 || o->ihl < 5)
			return count(DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		if (o->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return count(DECAP_STAT_PASS_FRAGMENT, XDP_PASS);
		outer_len = o->ihl * 4;
		inner_proto = o->protocol;
		outer_ecn = o->tos & 3;
		__builtin_memcpy(s4.addr, &o->saddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr *o6 = data + l2_len;

		if ((void *)(o6 + 1) > data_end)
			return count(DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
		if (o6->nexthdr != PROTO_IPIP && o6->nexthdr != PROTO_IPV6)
			return count(DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
		outer_len = IPV6_HDR_LEN;
		inner_proto = o6->nexthdr;
		outer_ecn = (o6->flow_lbl[0] >> 4) & 3;
		__builtin_memcpy(s6.addr, &o6->saddr, 16);
		outer_v6 = 1;
	} else {
		return count(DECAP_STAT_PASS_NOT_ENCAP, XDP_PASS);
	}

	struct vip_key k = {};
	__be16 inner_eth_proto;
	void *inner = data + l2_len + outer_len;

	if (inner_proto == PROTO_IPIP) {
		struct iphdr *in = inner;

		if ((void *)(in + 1) > data_end || in->version != 4)
			return count(DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		__builtin_memcpy(k.addr, &in->daddr, 4);
		k.family = FAMILY_V4;
		inner_eth_proto = bpf_htons(ETH_P_IP_);
	} else {
		struct ipv6hdr *in6 = inner;

		if ((void *)(in6 + 1) > data_end || in6->version != 6)
			return count(DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		__builtin_memcpy(k.addr, &in6->daddr, 16);
		k.family = FAMILY_V6;
		inner_eth_proto = bpf_htons(ETH_P_IPV6_);
	}
	if (!bpf_map_lookup_elem(&local_vips, &k))
		return count(DECAP_STAT_PASS_NOT_LOCAL, XDP_PASS);
	/* Only now: what is not for a local VIP is none of decap's business (a router's
	 * decap passes the tunnels it forwards). */
	if (!(outer_v6 ? bpf_map_lookup_elem(&allow_src6, &s6) : bpf_map_lookup_elem(&allow_src4, &s4)))
		return count(DECAP_STAT_DROP_SOURCE, XDP_DROP);

	int ce = 0;

	if (inner_proto == PROTO_IPIP) {
		struct iphdr *in = inner;

		if ((void *)(in + 1) > data_end)
			return count(DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		__u8 ie = in->tos & 3;
		int ne = ecn_decap(ie, outer_ecn);

		if (ne < 0)
			return count(DECAP_STAT_DROP_ECN, XDP_DROP);
		if (ne != ie) {
			/* The first 16-bit word holds version, ihl and tos: RFC 1624 update. */
			__u16 old = *(__u16 *)in;

			in->tos = (in->tos & ~3) | (__u8)ne;
			in->check = csum_replace16(in->check, old, *(__u16 *)in);
		}
		ce = ne == ECN_CE && ie != ECN_CE;
	} else {
		struct ipv6hdr *in6 = inner;

		if ((void *)(in6 + 1) > data_end)
			return count(DECAP_STAT_DROP_MALFORMED, XDP_DROP);
		__u8 ie = (in6->flow_lbl[0] >> 4) & 3;
		int ne = ecn_decap(ie, outer_ecn);

		if (ne < 0)
			return count(DECAP_STAT_DROP_ECN, XDP_DROP);
		if (ne != ie)
			in6->flow_lbl[0] = (in6->flow_lbl[0] & ~0x30) | (__u8)(ne << 4);
		ce = ne == ECN_CE && ie != ECN_CE;
	}

	__u8 dst[ETH_ALEN], src[ETH_ALEN];

	__builtin_memcpy(dst, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(src, eth->h_source, ETH_ALEN);
	if (bpf_xdp_adjust_head(ctx, (int)outer_len))
		return count(DECAP_STAT_DROP_ADJUST, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return count(DECAP_STAT_DROP_ADJUST, XDP_DROP);
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	if (vlan_tpid) {
		struct vlan_hdr_ *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return count(DECAP_STAT_DROP_ADJUST, XDP_DROP);
		eth->h_proto = vlan_tpid;
		vh->tci = vlan_tci;
		vh->encapsulated_proto = inner_eth_proto;
	} else {
		eth->h_proto = inner_eth_proto;
	}
	if (ce)
		count(DECAP_STAT_ECN_CE, 0);
	return count(DECAP_STAT_OK, XDP_PASS);
}

/* xdp_pass: attached to the peer of a veth that receives XDP_TX frames (testbeds). */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
