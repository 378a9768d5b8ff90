/* encap.h: push an outer IPv4 or IPv6 header in front of the packet (IPIP, ip6ip6, 4in6)
 * and rewrite the Ethernet header towards the next hop. */
#ifndef L4LB_ENCAP_H
#define L4LB_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "xdp_maps.h"
#include "csum.h"
#include "parse.h"

struct l2_saved {
	__u8 dst[ETH_ALEN];
	__u8 src[ETH_ALEN];
	__be16 vlan_tpid;
	__be16 vlan_tci;
};

/* encap grows the head by the outer header and writes L2 + outer L3. Returns 0 on success
 * or the stat id of the failure. */
static __always_inline __u32 encap(struct xdp_md *ctx, const struct packet *pkt,
				   const struct backend *be, const struct lb_config *cfg, __u32 hash)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct l2_saved l2;
	__u32 outer_len = be->family == FAMILY_V4 ? IPV4_HDR_LEN : IPV6_HDR_LEN;

	if ((void *)(eth + 1) > data_end)
		return STAT_DROP_ADJUST;
	__builtin_memcpy(l2.dst, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(l2.src, eth->h_source, ETH_ALEN);
	l2.vlan_tpid = 0;
	l2.vlan_tci = 0;
	if (pkt->l2_len > sizeof(struct ethhdr)) {
		struct vlan_hdr_ *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return STAT_DROP_ADJUST;
		l2.vlan_tpid = eth->h_proto;
		l2.vlan_tci = vh->tci;
	}

	if (bpf_xdp_adjust_head(ctx, 0 - (int)outer_len))
		return STAT_DROP_ADJUST;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;

	__be16 outer_proto = bpf_htons(be->family == FAMILY_V4 ? ETH_P_IP_ : ETH_P_IPV6_);
	void *l3;

	if ((void *)(eth + 1) > data_end)
		return STAT_DROP_ADJUST;
	/* The next hop of the interface the packet leaves by (XDP_TX: the one it came in by),
	 * else the node's, else back to the MAC it came from. */
	__u32 ifindex = ctx->ingress_ifindex;
	struct nexthop *nh = ifindex < MAX_IFINDEX ? bpf_map_lookup_elem(&nexthops, &ifindex) : NULL;
	int has_mac = cfg->nexthop_mac[0] | cfg->nexthop_mac[1] | cfg->nexthop_mac[2] |
		      cfg->nexthop_mac[3] | cfg->nexthop_mac[4] | cfg->nexthop_mac[5];

	if (nh && nh->set)
		__builtin_memcpy(eth->h_dest, nh->mac, ETH_ALEN);
	else
		__builtin_memcpy(eth->h_dest, has_mac ? cfg->nexthop_mac : l2.src, ETH_ALEN);
	__builtin_memcpy(eth->h_source, l2.dst, ETH_ALEN);
	if (l2.vlan_tpid) {
		struct vlan_hdr_ *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return STAT_DROP_ADJUST;
		eth->h_proto = l2.vlan_tpid;
		vh->tci = l2.vlan_tci;
		vh->encapsulated_proto = outer_proto;
		l3 = vh + 1;
	} else {
		eth->h_proto = outer_proto;
		l3 = eth + 1;
	}

	if (be->family == FAMILY_V4) {
		struct iphdr *o = l3;

		if ((void *)(o + 1) > data_end)
			return STAT_DROP_ADJUST;
		__u32 src = bpf_ntohl(*(__u32 *)cfg->src4);

		src = (src & ~cfg->src4_host_mask) | (hash & cfg->src4_host_mask);
		o->version = 4;
		o->ihl = 5;
		o->tos = pkt->tos;
		o->tot_len = bpf_htons(pkt->l3_len + IPV4_HDR_LEN);
		o->id = 0;
		o->frag_off = bpf_htons(IP_DF);
		o->ttl = OUTER_TTL;
		o->protocol = PROTO_IPIP;
		o->check = 0;
		o->saddr = bpf_htonl(src);
		__builtin_memcpy(&o->daddr, be->addr, 4);
		o->check = ipv4_hdr_csum((__u16 *)o);
		return 0;
	}

	struct ipv6hdr *o6 = l3;

	if ((void *)(o6 + 1) > data_end)
		return STAT_DROP_ADJUST;
	*(__be32 *)o6 = bpf_htonl((6U << 28) | ((__u32)pkt->tos << 20) | (hash & 0xfffff));
	o6->payload_len = bpf_htons(pkt->l3_len);
	o6->nexthdr = pkt->flow.family == FAMILY_V4 ? PROTO_IPIP : PROTO_IPV6;
	o6->hop_limit = OUTER_TTL;
	__builtin_memcpy(&o6->saddr, cfg->src6, 16);
	__u32 low = bpf_ntohl(*(__u32 *)&cfg->src6[12]);

	low = (low & ~cfg->src6_host_mask) | (hash & cfg->src6_host_mask);
	o6->saddr.in6_u.u6_addr32[3] = bpf_htonl(low);
	__builtin_memcpy(&o6->daddr, be->addr, 16);
	return 0;
}

#endif
