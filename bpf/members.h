/* members.h: which backends a VIP has now (the vip_backends map), and each (VIP, backend)
 * pair's index, which is also its counters' index in pair_stats. The loader places a pair
 * in the bucket its key hashes to or the next one, so a lookup reads one cache line, or
 * two, and calls one helper. */
#ifndef L4LB_MEMBERS_H
#define L4LB_MEMBERS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "xdp_maps.h"

/* 32 - log2(buckets of vip_backends); set by the loader. */
volatile const __u32 pair_shift = 32 - 12;

/* 0 while vip_backends is being filled for the first time over an adopted conntrack table
 * (an upgrade): entries are then followed without the check. Set by the loader. */
volatile __u32 members_ready = 1;

static __always_inline int pair_scan(__u32 bucket, __u32 key)
{
	struct pair_bucket *b = bpf_map_lookup_elem(&vip_backends, &bucket);

	if (!b)
		return -1;
#pragma unroll
	for (int i = 0; i < PAIR_WAYS; i++)
		if (b->key[i] == key)
			return i;
	return -1;
}

/* member_index: the pair index of backend id of the VIP with vip_id, or -1 when the VIP
 * does not have that backend. A global function: the verifier checks it once, and its
 * caller sees one unknown result instead of one path per way. */
__attribute__((noinline)) __s64 member_index(__u32 vip_id, __u32 backend_id)
{
	__u32 key = (vip_id << 16) | (backend_id & 0xffff);
	__u32 bucket = (key * PAIR_HASH_MUL) >> (pair_shift & 31);
	int way = pair_scan(bucket, key);

	if (way < 0) {
		bucket = (bucket + 1) & (0xffffffffU >> (pair_shift & 31));
		way = pair_scan(bucket, key);
		if (way < 0)
			return -1;
	}
	return (__s64)bucket * PAIR_WAYS + way;
}

#endif
