/* icmp.h: answer a client whose packet would not fit once encapsulated with an ICMP
 * frag-needed (IPv4) or packet-too-big (IPv6) from the VIP, sent back with XDP_TX, so path
 * MTU discovery works through the load balancer. The frame is rewritten in place: the
 * original L2 header is kept (MACs swapped, VLAN tag kept), the IP packet is replaced by
 * the ICMP message quoting its first bytes, and the tail is trimmed. */
#ifndef L4LB_ICMP_H
#define L4LB_ICMP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "csum.h"
#include "parse.h"

/* Bytes of the offending IP packet quoted: its header and the start of its L4 header
 * (IPv6: 40 + 24; IPv4: 20 to 60 + the rest), enough for the client's stack to find the socket. */
#define ICMP_QUOTE 64
#define ICMP_MSG_LEN (8 + ICMP_QUOTE)
#define IPV6_MIN_MTU 1280

/* csum_fold64 folds bpf_csum_diff's running sum into an Internet checksum. A helper call
 * rather than an unrolled loop keeps this rarely taken path small in the program. */
static __always_inline __u16 csum_fold64(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* send_too_big answers pkt (a packet of l3_len bytes that does not fit) with an ICMP that
 * announces fit, the largest IP packet that passes. The quote is moved into place inside
 * the frame (backwards, 8 bytes at a time: source and destination overlap), then the
 * headers are written over the start of the original packet and the tail is trimmed.
 * Returns 0 (send with XDP_TX) or the stat id of the failure. */
static __always_inline __u32 send_too_big(struct xdp_md *ctx, const struct packet *pkt, __u32 fit)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 l2 = pkt->l2_len == 18 ? 18 : 14;
	int v4 = pkt->flow.family == FAMILY_V4;
	__u32 iplen = v4 ? IPV4_HDR_LEN : IPV6_HDR_LEN;
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return STAT_DROP_ADJUST;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	__u8 *orig = data + l2;
	__u8 *quote = orig + iplen + sizeof(struct icmp_hdr_);

	if ((void *)(orig + IPV6_HDR_LEN + sizeof(struct icmp_hdr_) + ICMP_QUOTE) > data_end)
		return STAT_DROP_ADJUST;
#pragma unroll
	for (int i = ICMP_QUOTE / 8 - 1; i >= 0; i--)
		__builtin_memcpy(quote + i * 8, orig + i * 8, 8);

	if (bpf_xdp_adjust_tail(ctx, (int)(l2 + iplen + ICMP_MSG_LEN) - (int)(data_end - data)))
		return STAT_DROP_ADJUST;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (v4) {
		struct iphdr *ip = data + l2;
		struct icmp_hdr_ *ic = (void *)(ip + 1);

		if ((void *)ic + ICMP_MSG_LEN > data_end)
			return STAT_DROP_ADJUST;
		ip->version = 4;
		ip->ihl = 5;
		ip->tos = 0;
		ip->tot_len = bpf_htons(IPV4_HDR_LEN + ICMP_MSG_LEN);
		ip->id = 0;
		ip->frag_off = 0;
		ip->ttl = OUTER_TTL;
		ip->protocol = PROTO_ICMP;
		ip->check = 0;
		__builtin_memcpy(&ip->saddr, pkt->flow.dst, 4);
		__builtin_memcpy(&ip->daddr, pkt->flow.src, 4);
		ip->check = ipv4_hdr_csum((__u16 *)ip);
		ic->type = ICMP_DEST_UNREACH_;
		ic->code = ICMP_FRAG_NEEDED_;
		ic->checksum = 0;
		ic->rest = bpf_htonl(fit & 0xffff);
		ic->checksum = csum_fold64(bpf_csum_diff(0, 0, (__be32 *)ic, ICMP_MSG_LEN, 0));
		return 0;
	}

	struct ipv6hdr *ip6 = data + l2;
	struct icmp_hdr_ *ic = (void *)(ip6 + 1);

	if ((void *)ic + ICMP_MSG_LEN > data_end)
		return STAT_DROP_ADJUST;
	if (fit < IPV6_MIN_MTU)
		fit = IPV6_MIN_MTU;
	*(__be32 *)ip6 = bpf_htonl(6U << 28);
	ip6->payload_len = bpf_htons(ICMP_MSG_LEN);
	ip6->nexthdr = PROTO_ICMPV6;
	ip6->hop_limit = OUTER_TTL;
	__builtin_memcpy(&ip6->saddr, pkt->flow.dst, 16);
	__builtin_memcpy(&ip6->daddr, pkt->flow.src, 16);
	ic->type = ICMPV6_PKT_TOOBIG_;
	ic->code = 0;
	ic->checksum = 0;
	ic->rest = bpf_htonl(fit);
	/* Pseudo-header: source and destination (as written), length, next header. */
	__s64 sum = bpf_csum_diff(0, 0, (__be32 *)&ip6->saddr, 32, 0);

	if (sum < 0)
		return STAT_DROP_ADJUST;
	__u64 seed = (__u64)sum + bpf_htons(ICMP_MSG_LEN) + bpf_htons(PROTO_ICMPV6);

	seed = (seed & 0xffff) + (seed >> 16);
	seed = (seed & 0xffff) + (seed >> 16);
	ic->checksum = csum_fold64(bpf_csum_diff(0, 0, (__be32 *)ic, ICMP_MSG_LEN, (__u32)seed));
	return 0;
}

#endif
