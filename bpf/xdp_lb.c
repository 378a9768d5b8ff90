//go:build ignore

/* xdp_lb.c: the l4lb fast path. One XDP program: parse -> VIP lookup -> conntrack ->
 * Maglev ring -> IPIP/ip6ip6/4in6 encapsulation -> XDP_TX towards the next hop, with the
 * prefilter (deny list, allow lists, new-flow guard) in front of the load-balancing work. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "xdp_maps.h"
#include "jhash.h"
#include "flowhash.h"
#include "ring.h"
#include "vip.h"
#include "parse.h"
#include "encap.h"
#include "prefilter.h"
#include "conntrack.h"
#include "members.h"
#include "icmp.h"
#include "monitor.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Load-time knobs, set by the Go loader (pkg/lb/xdp). */
volatile const __u64 udp_timeout_ns = 30ULL * 1000000000ULL;
volatile const __u32 mtu = 1500;
/* ICMP too-big replies per source prefix (/24, /48) per CPU per second; 0: no limit. */
volatile const __u32 too_big_rate = 100;

/* too_big_allowed: whether another too-big reply may go to this source prefix now. */
static __always_inline int too_big_allowed(const struct packet *pkt)
{
	if (!too_big_rate)
		return 1;
	struct too_big_key k = {.family = pkt->flow.family};

	if (pkt->flow.family == FAMILY_V4)
		__builtin_memcpy(k.prefix, pkt->flow.src, 3);
	else
		__builtin_memcpy(k.prefix, pkt->flow.src, 6);
	__u64 now = bpf_ktime_get_ns();
	struct too_big_window *w = bpf_map_lookup_elem(&too_big_rate_state, &k);

	if (trace_mode) /* the answer this packet would get; nothing written */
		return !w || now - w->window_ns >= 1000000000ULL || w->count < too_big_rate;
	if (!w) {
		struct too_big_window fresh = {.window_ns = now, .count = 1};

		bpf_map_update_elem(&too_big_rate_state, &k, &fresh, BPF_ANY);
		return 1;
	}
	if (now - w->window_ns >= 1000000000ULL) {
		w->window_ns = now;
		w->count = 0;
	}
	if (w->count >= too_big_rate)
		return 0;
	w->count++;
	return 1;
}

static __always_inline struct backend *live_backend(__u32 id)
{
	struct backend *be = bpf_map_lookup_elem(&backends, &id);

	if (!be || !(be->flags & BACKEND_F_EXISTS))
		return NULL;
	return be;
}

/* Records only user space reads (the ring buffer's events, the trace's record): named
 * here so their types are in BTF for bpf2go. */
const struct mon_event *const btf_mon_event = 0;
const struct trace_record *const btf_trace_record = 0;

/* DONE ends the packet: the verdict is counted, then observed at out. */
#define DONE(stat, action)                                                                  \
	do {                                                                                \
		act = verdict(&pkt, (stat), (action));                                       \
		goto out;                                                                   \
	} while (0)

/* trace_finish writes the trace instance's record into the frame's metadata, where
 * BPF_PROG_TEST_RUN hands it back (pkg/lb/xdp trace.go). */
static __always_inline void trace_finish(struct xdp_md *ctx, struct trace_record *tr)
{
	struct trace_record *m = (void *)(long)ctx->data_meta;

	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return;
	tr->magic = TRACE_MAGIC;
	__builtin_memcpy(m, tr, sizeof(*tr));
}

SEC("xdp")
int xdp_lb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet pkt = {};
	struct trace_record tr; /* trace_mode only */
	struct vip_meta *vip = NULL;
	struct backend *be = NULL;
	__u32 vip_id = 0, backend_id = 0, prev_id = 0, kind = 0;
	__u8 mflags = 0; /* MON_EF_* */
	int act;

	if (trace_mode)
		__builtin_memset(&tr, 0, sizeof(tr));
	/* Parsing runs the prefilter's deny list as soon as the source address is known. */
	act = parse_packet(data, data_end, &pkt);
	if (act != PARSE_OK)
		goto out;

	vip = vip_find(pkt.flow.dst, pkt.flow.dport, pkt.flow.proto, pkt.flow.family);
	if (!vip)
		DONE(STAT_PASS_NON_VIP, XDP_PASS);
	vip_id = vip->id;
	mflags = MON_EF_VIP;
	struct vip_policy *pol = bpf_map_lookup_elem(&vip_policies, &vip_id);

	if (pol && (pol->flags & VIP_POLICY_F_ALLOW)) {
		if (!allowed(vip_id, &pkt.flow)) {
			struct vip_guard *g = bpf_map_lookup_elem(&vip_guards, &vip_id);

			if (g && !trace_mode)
				g->denied++;
			DONE(STAT_DROP_NOT_ALLOWED, XDP_DROP);
		}
		if (trace_mode)
			tr.flags |= TRACE_F_ALLOW;
	}
	__u32 hash = flow_hash(&pkt.flow, vip->flags);
	int is_udp = pkt.flow.proto == PROTO_UDP;
	/* A SYN always goes to the ring (no conntrack lookup): a client reusing a source port
	 * reaches a live backend, and the entry it writes replaces any stale one. */
	int is_syn = pkt.flow.proto == PROTO_TCP && !pkt.icmp_too_big &&
		     (pkt.tcp_flags & (TCPF_SYN_ | TCPF_ACK_)) == TCPF_SYN_;
	__u64 digest = ct_digest(&pkt.flow);
	struct ct_bucket *bk = ct_bucket_of(digest, 0);
	__u64 ct_st = 0;
	struct ct_way *ct = NULL;

	if (trace_mode) {
		tr.hash = hash;
		if (is_syn)
			tr.flags |= TRACE_F_SYN;
	}
	if (!is_syn) {
		ct = ct_find(bk, digest, &ct_st);
		if (!ct)
			ct = ct_find(ct_bucket_of(digest, 1), digest, &ct_st);
	}
	__u64 now = 0;
	int write_ct = 0; /* 1: update *ct in place; 2: insert a new entry */

	__s64 pair = -1;

	if (ct) {
		backend_id = ct_st & CT_BACKEND_MASK;
		if (trace_mode) {
			tr.flags |= TRACE_F_CT_FOUND;
			tr.ct_state = ct_st;
		}
		be = live_backend(backend_id);
		if (!be) {
			stat_inc(STAT_CT_REHASH);
			if (trace_mode)
				tr.detail |= TRACE_MOVED_GONE << 2;
		} else if ((pair = member_index(vip_id, backend_id)) < 0 && members_ready) {
			/* The VIP no longer has that backend (removed, or its id given to another
			 * address since): the entry is not followed. */
			stat_inc(STAT_CT_NOT_MEMBER);
			be = NULL;
			if (trace_mode)
				tr.detail |= TRACE_MOVED_NOT_MEMBER << 2;
		} else if (is_udp) {
			now = bpf_ktime_get_ns();
			__u32 seen = ct_st >> CT_SEEN_SHIFT;

			if ((__u32)(now >> CT_TIME_SHIFT) - seen > (__u32)(udp_timeout_ns >> CT_TIME_SHIFT)) {
				stat_inc(STAT_CT_UDP_EXPIRED);
				be = NULL;
				if (trace_mode)
					tr.detail |= TRACE_MOVED_EXPIRED << 2;
			} else if (!pkt.icmp_too_big && (__u32)(now >> CT_TIME_SHIFT) != seen) {
				if (trace_mode)
					tr.flags |= TRACE_F_WRITE_UPDATE;
				else
					ct_update(ct, ct_st, ct_state(backend_id, now) | CT_REF | CT_EST);
				ct_st |= CT_REF | CT_EST;
			}
		}
		if (be) {
			stat_inc(STAT_CT_HIT);
			if (!trace_mode)
				ct_touch(ct, ct_st);
		} else {
			prev_id = backend_id;
			kind = MON_FLOW_MOVED;
			mflags |= MON_EF_PREV;
		}
	} else if (!is_syn && !pkt.icmp_too_big && pkt.flow.proto == PROTO_TCP) {
		kind = MON_FLOW_MISS;
	}

	if (!be) {
		backend_id = ring_pick(vip, hash);
		if (trace_mode) {
			tr.flags |= TRACE_F_RING;
			tr.slot = ring_slot_of(vip_id, hash);
		}
		be = backend_id ? live_backend(backend_id) : NULL;
		if (!be) {
			backend_id = 0;
			DONE(STAT_DROP_NO_BACKEND, XDP_DROP);
		}
		pair = member_index(vip_id, backend_id);

		if (!pkt.icmp_too_big) {
			if (!ct)
				stat_inc(STAT_CT_MISS);
			if (ct)
				write_ct = 1;
			else if (pkt.flow.proto == PROTO_TCP && (pkt.tcp_flags & TCPF_RST_))
				stat_inc(STAT_CT_SKIP_RST);
			else if (bk)
				write_ct = 2;
		}
	}
	mflags |= MON_EF_BACKEND;
	if (trace_mode && !(tr.flags & TRACE_F_RING))
		tr.flags |= TRACE_F_CT_FOLLOWED;

	if (be->family == FAMILY_V4 && pkt.flow.family == FAMILY_V6)
		DONE(STAT_DROP_FAMILY, XDP_DROP);
	__u32 outer_len = be->family == FAMILY_V4 ? IPV4_HDR_LEN : IPV6_HDR_LEN;

	/* Too big once encapsulated: nothing is written to conntrack; the client is told the
	 * size that fits (IPv4 without DF may be fragmented by no one here: dropped). */
	if (pkt.l3_len + outer_len > mtu) {
		if (pkt.icmp_too_big || !pkt.df)
			DONE(STAT_DROP_TOO_BIG, XDP_DROP);
		if (!too_big_allowed(&pkt))
			DONE(STAT_DROP_TOO_BIG_RATE, XDP_DROP);
		__u32 fail = send_too_big(ctx, &pkt, mtu - outer_len);

		if (fail)
			DONE(fail, XDP_DROP);
		DONE(STAT_TX_ICMP_TOO_BIG, XDP_TX);
	}

	__u32 zero = 0;
	struct lb_config *cfg = bpf_map_lookup_elem(&lb_cfg, &zero);

	if (!cfg || (be->family == FAMILY_V4 && !cfg->has_src4) ||
	    (be->family == FAMILY_V6 && !cfg->has_src6))
		DONE(STAT_DROP_NO_SOURCE, XDP_DROP);

	int new_flow = write_ct != 0;

	if (write_ct == 2 && pol && (pol->guard_rate | pol->guard_drop_rate)) {
		int g = guard_new_flow(vip_id, pol);

		if (trace_mode)
			tr.detail |= g & 3;
		if (g == 2)
			DONE(STAT_GUARD_DROP, XDP_DROP);
		if (g == 1) {
			stat_inc(STAT_GUARD_UNTRACKED);
			write_ct = 0;
		}
	}
	if (write_ct == 2 && !kind)
		kind = MON_FLOW_NEW;
	if (trace_mode) {
		if (write_ct == 2)
			tr.flags |= TRACE_F_WRITE_NEW;
		else if (write_ct == 1)
			tr.flags |= TRACE_F_WRITE_UPDATE;
	} else if (write_ct) {
		if (is_udp && !now)
			now = bpf_ktime_get_ns();
		if (write_ct == 1)
			ct_update(ct, ct_st, ct_state(backend_id, now) | CT_REF | CT_EST);
		else if (ct_insert_flow(digest, ct_state(backend_id, now)) == 2)
			stat_inc(STAT_CT_EVICTED);
	}

	struct vip_counters *vs = trace_mode ? NULL : bpf_map_lookup_elem(&vip_stats, &vip_id);

	if (vs) {
		vs->packets++;
		vs->bytes += pkt.l3_len;
		vs->new_flows += new_flow;
	}
	if (pair >= 0 && !trace_mode) {
		__u32 pi = pair;
		struct backend_counters *bs = bpf_map_lookup_elem(&pair_stats, &pi);

		if (bs) {
			bs->packets++;
			bs->bytes += pkt.l3_len;
		}
	}

	__u32 fail = encap(ctx, &pkt, be, cfg, hash);

	if (fail)
		DONE(fail, XDP_DROP);
	if (pkt.icmp_too_big)
		stat_inc(STAT_ICMP_TOO_BIG_FWD);
	DONE(be->family == FAMILY_V4 ? STAT_TX_ENCAP4 : STAT_TX_ENCAP6, XDP_TX);

out:
	if (trace_mode) {
		tr.reason = pkt.reason;
		tr.action = act;
		tr.vip_id = vip_id;
		tr.backend_id = backend_id;
		if (vip)
			tr.flags |= TRACE_F_VIP;
		trace_finish(ctx, &tr);
	} else if (monitor_flags) {
		mon_packet(ctx, &pkt, act, kind, mflags, vip_id, backend_id, prev_id);
	}
	return act;
}
