/* mon_rate.h: the monitor's per-CPU event rate limit, shared by the XDP program and the
 * socket LB (each with its own mon_cpu state). */
#ifndef L4LB_MON_RATE_H
#define L4LB_MON_RATE_H

#include <linux/bpf.h>
#include "lb_structs.h"

/* mon_rate_ok counts one event against st's one-second window at now: 1 when it may be
 * sent, 0 (counted in lost_rate) when rate events were already sent in the window.
 * rate 0: no limit. */
static __always_inline int mon_rate_ok(struct mon_cpu *st, __u64 now, __u32 rate)
{
	if (!rate)
		return 1;
	if (now - st->window_ns >= 1000000000ULL) {
		st->window_ns = now;
		st->count = 0;
	}
	if (st->count >= rate) {
		st->lost_rate++;
		return 0;
	}
	st->count++;
	return 1;
}

#endif
