/* monitor.h: events for `l4lb monitor`. Every drop (MON_F_DROPS) and, sampled, the
 * forwarding decisions worth a look (MON_F_FLOWS: new flow, conntrack miss on a non-SYN,
 * a flow moved off a backend that left) go into a ring buffer the daemon reads. Off costs
 * one load of monitor_flags per packet; on, each CPU sends at most monitor_rate events a
 * second and counts what it could not send. */
#ifndef L4LB_MONITOR_H
#define L4LB_MONITOR_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "parse.h"
#include "mon_rate.h"

/* Run-time knobs, written by the daemon while the program runs. */
volatile __u32 monitor_flags = 0;  /* MON_F_* */
volatile __u32 monitor_rate = 1000; /* events per second per CPU; 0: no limit */
volatile __u32 monitor_sample = 1; /* flow events: one decision in this many */

/* Not pinned: each daemon loads its own program and reads its own ring. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MON_RING_SIZE);
} monitor_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mon_cpu);
} monitor_state SEC(".maps");

/* mon_emit sends one event about the frame in ctx, unless this CPU is over its rate or the
 * ring is full (counted either way). */
static __always_inline void mon_emit(struct xdp_md *ctx, const struct packet *pkt, __u8 type,
				     __u8 reason, __u8 flags, __u32 vip_id, __u32 backend_id,
				     __u32 prev_id)
{
	__u32 zero = 0;
	struct mon_cpu *st = bpf_map_lookup_elem(&monitor_state, &zero);

	if (!st)
		return;
	__u64 now = bpf_ktime_get_ns();

	if (!mon_rate_ok(st, now, monitor_rate))
		return;
	struct mon_event *e = bpf_ringbuf_reserve(&monitor_events, sizeof(*e), 0);

	if (!e) {
		st->lost_ring++;
		return;
	}
	st->sent++;
	e->ts_ns = now;
	e->cpu = bpf_get_smp_processor_id();
	e->vip_id = vip_id;
	e->backend_id = backend_id;
	e->prev_backend_id = prev_id;
	e->type = type;
	e->reason = reason;
	e->tcp_flags = pkt->tcp_flags;
	e->flags = flags;
	__builtin_memcpy(&e->flow, &pkt->flow, sizeof(e->flow));
	__u32 len = ctx->data_end - ctx->data;
	__u32 cap = len < MON_CAP ? len : MON_CAP;

	e->len = len;
	e->cap_len = 0;
	if (cap) {
		/* 1..MON_CAP in a form the verifier can bound (MON_CAP is a power of two). */
		cap = ((cap - 1) & (MON_CAP - 1)) + 1;
		if (bpf_xdp_load_bytes(ctx, 0, e->data, cap) == 0)
			e->cap_len = cap;
	}
	bpf_ringbuf_submit(e, 0);
}

/* mon_packet: what the monitor reports about a packet the program has decided. kind is a
 * MON_FLOW_* decision (0: none). */
static __always_inline void mon_packet(struct xdp_md *ctx, const struct packet *pkt, int action,
				       __u32 kind, __u8 flags, __u32 vip_id, __u32 backend_id,
				       __u32 prev_id)
{
	__u32 on = monitor_flags;

	if (action == XDP_DROP) {
		if (on & MON_F_DROPS)
			mon_emit(ctx, pkt, MON_T_DROP, pkt->reason, flags, vip_id, backend_id, 0);
		return;
	}
	if (!kind || !(on & MON_F_FLOWS))
		return;
	__u32 every = monitor_sample;

	if (every > 1 && bpf_get_prandom_u32() % every)
		return;
	mon_emit(ctx, pkt, MON_T_FLOW, kind, flags, vip_id, backend_id, prev_id);
}

#endif
