/* prefilter.h: the first stage of the fast path. A source-prefix deny list (IPv4 and IPv6
 * LPM tries, each prefix counting its drops), per-VIP allow lists, and the per-VIP
 * new-flow guard that stops writing conntrack entries above a configured rate. */
#ifndef L4LB_PREFILTER_H
#define L4LB_PREFILTER_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "xdp_maps.h"

/* denied4 / denied6: whether the source address is in the deny list; a hit counts a drop
 * on its prefix. IPv4 reads deny4_dir (one array load per packet), then a hash lookup
 * per prefix length listed inside the source's /24, longest first; IPv6 walks the trie
 * (at most 128 bits). */
static __always_inline int prefilter_flag(__u32 flag)
{
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&prefilter_on, &zero);

	return on && (*on & flag);
}

static __always_inline int denied4(const void *saddr)
{
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&prefilter_on, &zero);

	if (!on || !(*on & PREFILTER_F_DENY4))
		return 0;
	struct deny4_key k = { .prefixlen = 32 };
	struct deny_value *v;

	__builtin_memcpy(k.addr, saddr, 4);
	if (*on & PREFILTER_F_DENY4_DIR) {
		__u32 a = bpf_ntohl(*(__u32 *)k.addr);
		__u32 idx = a >> 10;
		__u64 *d = bpf_map_lookup_elem(&deny4_dir, &idx);

		if (!d)
			return 0;
		__u32 e = (*d >> ((a >> 4) & 0x30)) & 0xffff; /* entry (a >> 8) % 4 */

		if (!e)
			return 0;
		/* Longer prefixes inside this /24, longest first. */
#pragma unroll
		for (int l = 32; l > 24; l--) {
			if (!(e & (1U << (DENY4_DIR_LONG_SHIFT + l - 25))))
				continue;
			struct deny4_key lk = { .prefixlen = l };

			*(__u32 *)lk.addr = bpf_htonl(a & (~0U << (32 - l)));
			v = bpf_map_lookup_elem(&deny4_counts, &lk);
			if (v) {
				if (!trace_mode)
					__sync_fetch_and_add(&v->drops, 1);
				return 1;
			}
		}
		if (e & DENY4_DIR_OWNER_MASK) {
			/* A prefix of length <= 24 covers the whole /24. */
			__u32 len = (e & DENY4_DIR_OWNER_MASK) - 1;
			struct deny4_key sk = { .prefixlen = len };
			__u32 m = len ? ~0U << (32 - (len & 31)) : 0;

			*(__u32 *)sk.addr = bpf_htonl(a & m);
			v = bpf_map_lookup_elem(&deny4_counts, &sk);
			if (v) {
				if (!trace_mode)
					__sync_fetch_and_add(&v->drops, 1);
				return 1;
			}
			/* The loader writes a counter before the entry pointing at it and
			 * deletes it after: a miss is not expected; the trie answers. */
		} else {
			return 0;
		}
	}
	v = bpf_map_lookup_elem(&deny4, &k);
	if (!v)
		return 0;
	if (!trace_mode)
		__sync_fetch_and_add(&v->drops, 1);
	return 1;
}

static __always_inline int denied6(const void *saddr)
{
	if (!prefilter_flag(PREFILTER_F_DENY6))
		return 0;
	struct deny6_key k = { .prefixlen = 128 };

	__builtin_memcpy(k.addr, saddr, 16);
	struct deny_value *v = bpf_map_lookup_elem(&deny6, &k);

	if (!v)
		return 0;
	if (!trace_mode)
		__sync_fetch_and_add(&v->drops, 1);
	return 1;
}

/* allowed: whether the flow's source may reach VIP id (whose policy has an allow list). */
static __always_inline int allowed(__u32 vip_id, const struct flow_key *f)
{
	struct allow_key k = { .vip_id = vip_id };

	__builtin_memcpy(k.addr, f->src, 16);
	k.prefixlen = 32 + (f->family == FAMILY_V4 ? 32 : 128);
	return bpf_map_lookup_elem(&allow_list, &k) != NULL;
}

/* TCP flag sets a connection can carry (PSH, ECE and CWR ignored), as Linux conntrack
 * judges them: SYN, SYN+URG, SYN+ACK, RST, RST+ACK, FIN+ACK, FIN+ACK+URG, ACK, ACK+URG.
 * Bit n of the mask is set when flag set n (FIN..URG, PSH cleared) is possible. */
#define TCP_VALID_FLAGS_MASK                                                               \
	((1ULL << TCPF_SYN_) | (1ULL << (TCPF_SYN_ | TCPF_URG_)) |                          \
	 (1ULL << (TCPF_SYN_ | TCPF_ACK_)) | (1ULL << TCPF_RST_) |                          \
	 (1ULL << (TCPF_RST_ | TCPF_ACK_)) | (1ULL << (TCPF_FIN_ | TCPF_ACK_)) |            \
	 (1ULL << (TCPF_FIN_ | TCPF_ACK_ | TCPF_URG_)) | (1ULL << TCPF_ACK_) |              \
	 (1ULL << (TCPF_ACK_ | TCPF_URG_)))

static __always_inline int tcp_flags_valid(__u8 flags)
{
	__u32 f = flags & 0x3f & ~TCPF_PSH_;

	return (TCP_VALID_FLAGS_MASK >> f) & 1;
}

/* guard_new_flow: called for a new flow of a VIP with a guard; returns 0 to track it, 1 to
 * forward it untracked, 2 to drop it. Per CPU, one-second windows. */
static __always_inline int guard_new_flow(__u32 vip_id, const struct vip_policy *pol)
{
	struct vip_guard *g = bpf_map_lookup_elem(&vip_guards, &vip_id);

	if (!g)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 count = now - g->window_ns >= 1000000000ULL ? 1 : g->count + 1;

	if (trace_mode) { /* the answer this packet would get; nothing written */
		if (pol->guard_drop_rate && count > pol->guard_drop_rate)
			return 2;
		return pol->guard_rate && count > pol->guard_rate;
	}
	if (now - g->window_ns >= 1000000000ULL) {
		g->window_ns = now;
		g->count = 0;
	}
	g->count++;
	if (pol->guard_drop_rate && g->count > pol->guard_drop_rate) {
		g->dropped++;
		return 2;
	}
	if (pol->guard_rate && g->count > pol->guard_rate) {
		g->untracked++;
		return 1;
	}
	return 0;
}

#endif
