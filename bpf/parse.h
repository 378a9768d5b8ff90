/* parse.h: header parsing for the XDP load balancer. Every parser either fills struct
 * packet and returns PARSE_OK, or returns a verdict after counting its reason.
 *
 * The rule for bad input (also in docs/architecture.md):
 *   - a malformed L2/L3 header (too short, bad version, IHL < 5, total length past the
 *     frame): XDP_DROP; the kernel would drop it too, and we never forward it;
 *   - a fragment, a cut-short L4 header or too many IPv6 extension headers: XDP_DROP when
 *     the destination address carries a VIP, XDP_PASS otherwise (not our traffic);
 *   - a source in the deny list (prefilter.h): XDP_DROP, checked as soon as the IP header
 *     is read, before anything else;
 *   - what parses but no backend should see, to a VIP address: impossible TCP flag sets,
 *     a UDP length that is < 8 or disagrees with the IP payload length: XDP_DROP;
 *   - an ICMP too-big whose outer destination is not a VIP address: XDP_PASS (the node's
 *     own traffic); one to a VIP address quoting a packet from another address: XDP_DROP;
 *   - anything that is not for a VIP: XDP_PASS, untouched.
 */
#ifndef L4LB_PARSE_H
#define L4LB_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "xdp_maps.h"
#include "prefilter.h"

#define PARSE_OK (-1)

/* len16 reads a 16-bit length from the wire. The verifiers of Linux 6.1 and 6.12 keep no
 * bounds across a byte swap (BPF_END), so a swapped length added to a packet pointer is
 * "unbounded" there. The mask restores the bounds; the empty asm hides the swap from
 * clang, which would otherwise drop the mask as redundant. */
static __always_inline __u32 len16(const __be16 *p)
{
	__u32 v = bpf_ntohs(*p);

	asm volatile("" : "+r"(v));
	return v & 0xffff;
}

struct vlan_hdr_ {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* ICMP and ICMPv6 share this 8-byte header layout. */
struct icmp_hdr_ {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u32 rest;
};

struct packet {
	struct flow_key flow;
	__u16 l2_len;     /* 14, or 18 with one VLAN tag */
	__u16 l3_len;     /* IP total length (IPv6: 40 + payload length) */
	__u8 tos;         /* IPv4 TOS / IPv6 traffic class, copied to the outer header */
	__u8 tcp_flags;
	__u8 icmp_too_big; /* an ICMP too-big about a VIP flow: flow is the reversed inner flow */
	__u8 df;           /* IPv4 with DF set, or IPv6: a too-big packet gets an ICMP answer */
	__u8 reason;       /* the stat id of the verdict (verdict()) */
};

/* verdict: the packet's fate. Counts its reason and keeps it in pkt for the monitor and
 * the trace (xdp_lb.c). */
static __always_inline int verdict(struct packet *pkt, __u32 stat, int action)
{
	pkt->reason = stat;
	stat_inc(stat);
	return action;
}

/* vip_addr_known tells whether any VIP lives on this address. */
static __always_inline int vip_addr_known(const struct flow_key *f)
{
	struct vip_key k = {};

	__builtin_memcpy(k.addr, f->dst, 16);
	k.family = f->family;
	return bpf_map_lookup_elem(&vip_addrs, &k) != NULL;
}

/* not_ours: the verdict for a packet we cannot parse further; f->dst must be set. */
static __always_inline int not_ours(struct packet *pkt, __u32 drop_stat)
{
	if (vip_addr_known(&pkt->flow))
		return verdict(pkt, drop_stat, XDP_DROP);
	return verdict(pkt, STAT_PASS_NON_VIP, XDP_PASS);
}

static __always_inline int parse_l4_ports(void *l4, void *data_end, __u32 room, struct packet *pkt)
{
	if (pkt->flow.proto == PROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end || room < sizeof(*th))
			return not_ours(pkt, STAT_DROP_TRUNC_L4);
		pkt->flow.sport = th->source;
		pkt->flow.dport = th->dest;
		pkt->tcp_flags = ((__u8 *)th)[13];
		if (!tcp_flags_valid(pkt->tcp_flags))
			return not_ours(pkt, STAT_DROP_TCP_FLAGS);
		return PARSE_OK;
	}
	struct udphdr *uh = l4;

	if ((void *)(uh + 1) > data_end || room < sizeof(*uh))
		return not_ours(pkt, STAT_DROP_TRUNC_L4);
	pkt->flow.sport = uh->source;
	pkt->flow.dport = uh->dest;
	__u32 ulen = len16(&uh->len);

	if (ulen < sizeof(*uh) || ulen != room)
		return not_ours(pkt, STAT_DROP_UDP_LEN);
	return PARSE_OK;
}

/* parse_icmp4: an ICMP frag-needed whose quoted packet left a VIP. The flow is the
 * quoted one reversed, so it hashes to the backend that sent the quoted packet. */
static __always_inline int parse_icmp4(void *l4, void *data_end, __u32 room, struct packet *pkt)
{
	struct icmp_hdr_ *ic = l4;

	if ((void *)(ic + 1) > data_end || room < sizeof(*ic))
		return not_ours(pkt, STAT_DROP_TRUNC_L4);
	if (ic->type != ICMP_DEST_UNREACH_ || ic->code != ICMP_FRAG_NEEDED_)
		return verdict(pkt, vip_addr_known(&pkt->flow) ? STAT_PASS_OTHER_PROTO : STAT_PASS_NON_VIP,
			       XDP_PASS);

	struct iphdr *in = (void *)(ic + 1);

	if ((void *)(in + 1) > data_end || in->ihl < 5 || in->version != 4)
		return not_ours(pkt, STAT_DROP_ICMP_BAD);
	__u32 in_ihl = in->ihl * 4;
	__u16 *ports = (void *)in + in_ihl;

	/* The quote must hold the ports, inside the frame and inside the IP total length. */
	if ((void *)(ports + 2) > data_end || sizeof(*ic) + in_ihl + 4 > room)
		return not_ours(pkt, STAT_DROP_ICMP_BAD);
	/* Only an ICMP addressed to a VIP address is ours; one to the node goes to the kernel. */
	if (!vip_addr_known(&pkt->flow))
		return verdict(pkt, STAT_PASS_NON_VIP, XDP_PASS);
	if (in->protocol != PROTO_TCP && in->protocol != PROTO_UDP)
		return verdict(pkt, STAT_PASS_OTHER_PROTO, XDP_PASS);
	/* The quoted packet must have left the VIP the ICMP is addressed to. */
	if (__builtin_memcmp(&in->saddr, pkt->flow.dst, 4))
		return verdict(pkt, STAT_DROP_ICMP_BAD, XDP_DROP);

	__builtin_memset(pkt->flow.src, 0, 16);
	__builtin_memset(pkt->flow.dst, 0, 16);
	__builtin_memcpy(pkt->flow.src, &in->daddr, 4);
	__builtin_memcpy(pkt->flow.dst, &in->saddr, 4);
	pkt->flow.sport = ports[1];
	pkt->flow.dport = ports[0];
	pkt->flow.proto = in->protocol;
	pkt->icmp_too_big = 1;
	return PARSE_OK;
}

static __always_inline int parse_icmp6(void *l4, void *data_end, __u32 room, struct packet *pkt)
{
	struct icmp_hdr_ *ic = l4;

	if ((void *)(ic + 1) > data_end || room < sizeof(*ic))
		return not_ours(pkt, STAT_DROP_TRUNC_L4);
	if (ic->type != ICMPV6_PKT_TOOBIG_)
		return verdict(pkt, vip_addr_known(&pkt->flow) ? STAT_PASS_OTHER_PROTO : STAT_PASS_NON_VIP,
			       XDP_PASS);

	struct ipv6hdr *in = (void *)(ic + 1);

	if ((void *)(in + 1) > data_end || in->version != 6)
		return not_ours(pkt, STAT_DROP_ICMP_BAD);
	__u16 *ports = (void *)(in + 1);

	if ((void *)(ports + 2) > data_end || sizeof(*ic) + IPV6_HDR_LEN + 4 > room)
		return not_ours(pkt, STAT_DROP_ICMP_BAD);
	if (!vip_addr_known(&pkt->flow))
		return verdict(pkt, STAT_PASS_NON_VIP, XDP_PASS);
	if (in->nexthdr != PROTO_TCP && in->nexthdr != PROTO_UDP)
		return verdict(pkt, STAT_PASS_OTHER_PROTO, XDP_PASS);
	if (__builtin_memcmp(&in->saddr, pkt->flow.dst, 16))
		return verdict(pkt, STAT_DROP_ICMP_BAD, XDP_DROP);

	__builtin_memcpy(pkt->flow.src, &in->daddr, 16);
	__builtin_memcpy(pkt->flow.dst, &in->saddr, 16);
	pkt->flow.sport = ports[1];
	pkt->flow.dport = ports[0];
	pkt->flow.proto = in->nexthdr;
	pkt->icmp_too_big = 1;
	return PARSE_OK;
}

static __always_inline int parse_ipv4(void *data, void *data_end, struct packet *pkt)
{
	struct iphdr *iph = data + pkt->l2_len;

	if ((void *)(iph + 1) > data_end)
		return verdict(pkt, STAT_DROP_TRUNC_IP, XDP_DROP);
	if (iph->version != 4 || iph->ihl < 5)
		return verdict(pkt, STAT_DROP_BAD_IP, XDP_DROP);

	__u32 ihl = iph->ihl * 4;
	__u32 tot = len16(&iph->tot_len);

	if (tot < ihl)
		return verdict(pkt, STAT_DROP_BAD_IP, XDP_DROP);
	if ((void *)iph + tot > data_end)
		return verdict(pkt, STAT_DROP_TRUNC_IP, XDP_DROP);

	pkt->l3_len = tot;
	pkt->tos = iph->tos;
	pkt->df = (iph->frag_off & bpf_htons(IP_DF)) != 0;
	pkt->flow.family = FAMILY_V4;
	pkt->flow.proto = iph->protocol;
	__builtin_memcpy(pkt->flow.src, &iph->saddr, 4);
	__builtin_memcpy(pkt->flow.dst, &iph->daddr, 4);
	if (denied4(&iph->saddr))
		return verdict(pkt, STAT_DROP_DENY, XDP_DROP);

	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return not_ours(pkt, STAT_DROP_FRAGMENT);

	void *l4 = (void *)iph + ihl;
	__u32 room = tot - ihl;

	switch (iph->protocol) {
	case PROTO_TCP:
	case PROTO_UDP:
		return parse_l4_ports(l4, data_end, room, pkt);
	case PROTO_ICMP:
		return parse_icmp4(l4, data_end, room, pkt);
	default:
		return verdict(pkt, vip_addr_known(&pkt->flow) ? STAT_PASS_OTHER_PROTO : STAT_PASS_NON_VIP,
			       XDP_PASS);
	}
}

static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == PROTO_HOPOPTS || nh == PROTO_ROUTING || nh == PROTO_DSTOPTS;
}

static __always_inline int parse_ipv6(void *data, void *data_end, struct packet *pkt)
{
	struct ipv6hdr *ip6 = data + pkt->l2_len;

	if ((void *)(ip6 + 1) > data_end)
		return verdict(pkt, STAT_DROP_TRUNC_IP, XDP_DROP);
	if (ip6->version != 6)
		return verdict(pkt, STAT_DROP_BAD_IP, XDP_DROP);

	__u32 tot = len16(&ip6->payload_len) + IPV6_HDR_LEN;

	if ((void *)ip6 + tot > data_end)
		return verdict(pkt, STAT_DROP_TRUNC_IP, XDP_DROP);

	pkt->l3_len = tot;
	pkt->df = 1;
	pkt->tos = (bpf_ntohl(*(__be32 *)ip6) >> 20) & 0xff;
	pkt->flow.family = FAMILY_V6;
	__builtin_memcpy(pkt->flow.src, &ip6->saddr, 16);
	__builtin_memcpy(pkt->flow.dst, &ip6->daddr, 16);
	if (denied6(&ip6->saddr))
		return verdict(pkt, STAT_DROP_DENY, XDP_DROP);

	__u8 nh = ip6->nexthdr;
	__u32 off = IPV6_HDR_LEN;

#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		if (!is_ipv6_ext(nh))
			break;
		__u8 *eh = (void *)ip6 + off;

		if ((void *)(eh + 2) > data_end || off + 2 > tot)
			return not_ours(pkt, STAT_DROP_IPV6_EXT);
		nh = eh[0];
		off += (eh[1] + 1) * 8;
	}
	if (is_ipv6_ext(nh) || off > tot)
		return not_ours(pkt, STAT_DROP_IPV6_EXT);
	pkt->flow.proto = nh;
	if (nh == PROTO_FRAGMENT)
		return not_ours(pkt, STAT_DROP_FRAGMENT);

	void *l4 = (void *)ip6 + off;
	__u32 room = tot - off;

	switch (nh) {
	case PROTO_TCP:
	case PROTO_UDP:
		return parse_l4_ports(l4, data_end, room, pkt);
	case PROTO_ICMPV6:
		return parse_icmp6(l4, data_end, room, pkt);
	default:
		return verdict(pkt, vip_addr_known(&pkt->flow) ? STAT_PASS_OTHER_PROTO : STAT_PASS_NON_VIP,
			       XDP_PASS);
	}
}

/* parse_packet fills pkt from the frame or returns the verdict for it. */
static __always_inline int parse_packet(void *data, void *data_end, struct packet *pkt)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return verdict(pkt, STAT_DROP_TRUNC_ETH, XDP_DROP);
	__be16 proto = eth->h_proto;

	pkt->l2_len = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_)) {
		struct vlan_hdr_ *vh = (void *)(eth + 1);

		if ((void *)(vh + 1) > data_end)
			return verdict(pkt, STAT_DROP_TRUNC_ETH, XDP_DROP);
		proto = vh->encapsulated_proto;
		pkt->l2_len += sizeof(*vh);
		if (proto == bpf_htons(ETH_P_8021Q_) || proto == bpf_htons(ETH_P_8021AD_))
			return verdict(pkt, STAT_PASS_QINQ, XDP_PASS);
	}
	if (proto == bpf_htons(ETH_P_IP_))
		return parse_ipv4(data, data_end, pkt);
	if (proto == bpf_htons(ETH_P_IPV6_))
		return parse_ipv6(data, data_end, pkt);
	return verdict(pkt, STAT_PASS_NON_IP, XDP_PASS);
}

#endif
