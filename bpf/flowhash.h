/* flowhash.h: the flow hash that picks a ring slot for a new flow. pkg/lb/xdp/flowhash.go
 * mirrors it, so Go can say which slot a flow hashes to; any other data plane that means
 * to pick the same backend as XDP for the same flow must compute the same value.
 *
 * It is the kernel's jhash() over the bytes saddr, daddr, then the two ports as they sit
 * in the transport header (sport zeroed with VIP_F_HASH_NO_SPORT), seeded with the
 * protocol: jhash_3words and jhash_9words equal jhash() of 12 and 36 bytes. nftables
 * computes the same with "jhash ip saddr . ip daddr . th 0-4 bytes seed <proto>"
 * (pkg/lb/nft/rules.go hashExprs); keep the two in step. */
#ifndef L4LB_FLOWHASH_H
#define L4LB_FLOWHASH_H

#include <linux/types.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "jhash.h"

/* flow_words64: jhash over the flow's addresses and ports (ports as given) seeded with
 * seed, as b << 32 | c. */
static __always_inline __u64 flow_words64(const struct flow_key *f, __u32 ports, __u32 seed)
{
	if (f->family == FAMILY_V4)
		return jhash_3words64(*(__u32 *)f->src, *(__u32 *)f->dst, ports, seed);

	__u32 k[9];

	__builtin_memcpy(k, f->src, 16);
	__builtin_memcpy(&k[4], f->dst, 16);
	k[8] = ports;
	return jhash_9words64(k, seed);
}

static __always_inline __u32 flow_hash(const struct flow_key *f, __u32 vip_flags)
{
	__u32 ports = ((__u32)f->dport << 16) | f->sport;

	if (vip_flags & VIP_F_HASH_NO_SPORT)
		ports = (__u32)f->dport << 16;
	return (__u32)flow_words64(f, ports, f->proto);
}

/* ct_digest: the flow's conntrack digest, over the whole 5-tuple whatever the VIP's flags,
 * with a seed of its own (so it is independent of the ring's hash). Its low 32 bits pick
 * the bucket; all 64 are compared. pkg/lb/xdp/flowhash.go mirrors it. */
#define CT_HASH_SEED 0x6c346c62 /* "l4lb" */

static __always_inline __u64 ct_digest(const struct flow_key *f)
{
	__u32 ports = ((__u32)f->dport << 16) | f->sport;

	return flow_words64(f, ports, CT_HASH_SEED ^ (((__u32)f->family << 8) | f->proto));
}

#endif
