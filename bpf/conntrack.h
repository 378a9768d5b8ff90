/* conntrack.h: the conntrack table, an array of buckets of CT_WAYS ways (one cache line
 * each) shared by every CPU.
 * Ordering contract: a way's stores (digest, state) and loads (state, digest, state) keep
 * program order, which x86-64 gives and the loader requires (details below).
 *
 * A flow's 64-bit digest (ct_digest) names two buckets, one from each 32-bit half; a
 * flow's entry is the way of either that holds its digest and names its backend. Finding
 * or writing an entry reads one line, or two, and calls no helper, where a kernel hash
 * map's update takes two locks and an allocation (docs/benchmarks.md has the figures).
 *
 * Which way a new flow takes, best first: the way already holding its digest; an empty
 * way; a one-packet flow's way (never found by a later packet: a spoofed SYN); an idle
 * flow's way (found by no packet since its bucket was last full). The second bucket is
 * read only when the first has no empty way, and the better of the two is taken. If
 * every way of both was found since, the first bucket's ways lose that mark (second
 * chance: the flows still sending mark theirs again) and the way the digest names goes.
 * A flood of one-packet flows so replaces its own entries before any established flow's,
 * and flows that stopped go before flows that still send. A flow without an entry still
 * reaches the same backend through the ring while the backend set is stable.
 *
 * Ways are written without locks: a writer claims a way by swapping the state it read for
 * CT_BUSY with the next claim generation (compare and swap: it loses if another CPU
 * changed the way first), then writes the digest, then the state with that generation. A
 * reader takes a way only if its backend and generation (CT_CLAIM_MASK) read the same
 * before and after the digest: a way rewritten meanwhile, even back to the same backend,
 * reads as a miss. Mark and time updates are atomic or compare-and-swap and keep the
 * generation, so none can undo a rewrite.
 *
 * Ordering contract: the writer's stores (digest, then state) become visible in program
 * order and the reader's three loads are not reordered with each other: x86-64 (TSO)
 * gives both with plain accesses, so the loader refuses other architectures (xdp.Load).
 *
 * A hit is followed only to a backend the packet's VIP still has (vip_backends, see
 * members.h): an entry's VIP is its flow's destination, part of the digest, so an entry
 * can never send a flow to a backend of another VIP, even after its backend id has been
 * given to another address. */
#ifndef L4LB_CONNTRACK_H
#define L4LB_CONNTRACK_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "xdp_maps.h"

#define CT_READ(x) (*(volatile __u64 *)&(x))
#define CT_WRITE(x, v) (*(volatile __u64 *)&(x) = (v))

/* Buckets in the conntrack map; set by the loader with max_entries. */
volatile const __u32 ct_buckets = CT_SIZE / CT_WAYS;

/* ct_bucket_of: the flow's first (half 0: low 32 bits) or second (half 1) bucket. */
static __always_inline struct ct_bucket *ct_bucket_of(__u64 digest, int half)
{
	__u32 h = half ? digest >> 32 : digest;
	__u32 idx = ((__u64)h * ct_buckets) >> 32;

	return bpf_map_lookup_elem(&conntrack, &idx);
}

/* ct_find: the way of bk holding digest d (its state in *state), or NULL. */
static __always_inline struct ct_way *ct_find(struct ct_bucket *bk, __u64 d, __u64 *state)
{
	if (!bk)
		return NULL;
#pragma unroll
	for (int i = 0; i < CT_WAYS; i++) {
		struct ct_way *w = &bk->way[i];
		__u64 s = CT_READ(w->state);

		if (!(s & CT_BACKEND_MASK) || CT_READ(w->digest) != d)
			continue;
		if ((CT_READ(w->state) ^ s) & CT_CLAIM_MASK)
			continue; /* rewritten while we read it */
		*state = s;
		return w;
	}
	return NULL;
}

/* ct_touch: marks a found way referenced and established (one atomic write per flow per
 * second chance). */
static __always_inline void ct_touch(struct ct_way *w, __u64 state)
{
	if (!(state & CT_REF))
		__sync_fetch_and_or(&w->state, CT_REF | CT_EST);
}

/* ct_update: replaces a found way's state (keeping its claim generation), unless another
 * CPU changed it since it was read as old. */
static __always_inline void ct_update(struct ct_way *w, __u64 old, __u64 state)
{
	__sync_val_compare_and_swap(&w->state, old, (state & ~CT_GEN_MASK) | (old & CT_GEN_MASK));
}

/* ct_next_gen: the claim generation a writer that read state s writes. */
static __always_inline __u64 ct_next_gen(__u64 s)
{
	return (s + (1ULL << CT_GEN_SHIFT)) & CT_GEN_MASK;
}

static __always_inline __u64 ct_state(__u32 backend_id, __u64 now_ns)
{
	return (backend_id & CT_BACKEND_MASK) | ((now_ns >> CT_TIME_SHIFT) << CT_SEEN_SHIFT);
}

/* ct_victim: the best way of bk for digest d: its index in *way, the state read in
 * *state; returns its rank. */
static __always_inline int ct_victim(struct ct_bucket *bk, __u64 d, __u32 *way, __u64 *state)
{
	int best = CT_RANK_NONE;

#pragma unroll
	for (int i = 0; i < CT_WAYS; i++) {
		__u64 s = CT_READ(bk->way[i].state);
		int r;

		if (s & CT_BUSY)
			continue;
		if (!(s & CT_BACKEND_MASK))
			r = CT_RANK_EMPTY;
		else if (CT_READ(bk->way[i].digest) == d)
			r = CT_RANK_SAME;
		else if (s & CT_REF)
			continue;
		else
			r = s & CT_EST ? CT_RANK_IDLE : CT_RANK_ONE_PACKET;
		if (r < best) {
			best = r;
			*way = i;
			*state = s;
		}
	}
	return best;
}

/* ct_insert: writes digest d with state for a new flow (see above for which way). Returns
 * 0; 1 if another CPU took the way first (the flow is then not tracked this packet); 2
 * if the way held an established flow (found by a later packet of its own), which loses
 * its entry. The second bucket is read whenever the first does not hold d: a way of
 * either that holds d is rewritten, so a flow never has two entries (a stale one would
 * come back when the other is evicted). */
static __always_inline int ct_insert(struct ct_bucket *b1, __u64 d, __u64 state)
{
	__u32 way = 0;
	__u64 vs = 0;
	struct ct_bucket *bk = b1;
	int rank = ct_victim(b1, d, &way, &vs);

	if (rank != CT_RANK_SAME) {
		struct ct_bucket *b2 = ct_bucket_of(d, 1);
		__u32 way2 = 0;
		__u64 vs2 = 0;

		int rank2 = b2 && b2 != b1 ? ct_victim(b2, d, &way2, &vs2) : CT_RANK_NONE;

		if (rank2 < rank && (rank2 == CT_RANK_SAME || rank > CT_RANK_EMPTY)) {
			rank = rank2;
			bk = b2;
			way = way2;
			vs = vs2;
		}
	}
	if (rank == CT_RANK_NONE) {
		/* Every way of both buckets referenced: second chance for the first bucket's,
		 * and the way the digest names goes. */
#pragma unroll
		for (int i = 0; i < CT_WAYS; i++)
			__sync_fetch_and_and(&b1->way[i].state, ~CT_REF);
		way = d & (CT_WAYS - 1);
		vs = CT_READ(b1->way[way & (CT_WAYS - 1)].state);
		if (vs & CT_BUSY)
			return 1;
	}
	struct ct_way *w = &bk->way[way & (CT_WAYS - 1)];
	__u64 gen = ct_next_gen(vs);

	if (__sync_val_compare_and_swap(&w->state, vs, CT_BUSY | gen) != vs)
		return 1;
	CT_WRITE(w->digest, d);
	CT_WRITE(w->state, (state & ~CT_GEN_MASK) | gen);
	return rank >= CT_RANK_IDLE ? 2 : 0;
}

/* ct_insert_flow: ct_insert into digest d's buckets. A global function: the verifier
 * checks it once, and its caller sees one unknown result instead of one path per way. */
__attribute__((noinline)) int ct_insert_flow(__u64 d, __u64 state)
{
	struct ct_bucket *b1 = ct_bucket_of(d, 0);

	if (!b1)
		return 3;
	return ct_insert(b1, d, state);
}

#endif
