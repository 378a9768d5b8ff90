/* ring.h: reading a VIP's Maglev ring. Every BPF program that picks a backend for a new
 * flow (the XDP fast path, connect-time socket LB) goes through ring_pick(), so the ring
 * layout is known here and in the Go loader only.
 * Ordering contract: a reader loads ring_sel.active once; the loader writes a half before
 * flipping to it and rewrites it only one RCU grace period after flipping away. */
#ifndef L4LB_RING_H
#define L4LB_RING_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"

/* How a flow hash maps to a slot, set at load time (xdp.slot_mapping):
 *   0, modulo: hash % size, the default, so nodes of a fleet that keep the default agree
 *      on a flow's slot whatever version each runs;
 *   1, scaled: the kernel's reciprocal_scale(), ((u64)hash * size) >> 32, which is how
 *      nftables' "jhash ... mod size" scales its hash, so the nftables data plane
 *      (pkg/lb/nft) picks the same slot, hence the same backend, for the same flow.
 * pkg/lb/xdp/flowhash.go RingSlot mirrors it. */
volatile const __u32 slot_scaled = 0;

static __always_inline __u32 ring_slot(__u32 hash, __u32 size)
{
	if (slot_scaled)
		return (__u32)(((__u64)hash * size) >> 32);
	return hash % size;
}

/* ring_pick returns the backend id in the slot hash selects in the VIP's ring, or 0 when
 * the VIP has no ring (0 is never a backend id). Each VIP has its own ring size, in
 * ring_sel. */
static __always_inline __u32 ring_pick(const struct vip_meta *vip, __u32 hash)
{
	__u32 vip_id = vip->id;
	struct ring_select *sel = bpf_map_lookup_elem(&ring_sel, &vip_id);

	if (!sel)
		return 0;
	struct ring_half *h = &sel->half[sel->active & 1];
	__u32 size = h->size;

	if (!size)
		return 0;
	__u32 slot = ring_slot(hash, size);
	__u32 block = h->block + slot / RING_BLOCK_SLOTS;
	struct ring_block *b = bpf_map_lookup_elem(&rings, &block);

	if (!b)
		return 0;
	return b->slot[slot % RING_BLOCK_SLOTS];
}

/* ring_slot_of: the slot hash selects in the VIP's active ring, ~0 when it has none (the
 * trace reports it; ring_pick reads the same). */
static __always_inline __u32 ring_slot_of(__u32 vip_id, __u32 hash)
{
	struct ring_select *sel = bpf_map_lookup_elem(&ring_sel, &vip_id);

	if (!sel)
		return ~0U;
	struct ring_half *h = &sel->half[sel->active & 1];

	if (!h->size)
		return ~0U;
	return ring_slot(hash, h->size);
}

#endif
