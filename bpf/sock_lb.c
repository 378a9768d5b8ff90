//go:build ignore

/* sock_lb.c: connect-time load balancing for local clients. cgroup sock_addr programs
 * rewrite a VIP:port to a backend of that VIP when a socket connects (TCP, connected UDP)
 * or sends a datagram (unconnected UDP), and rewrite the backend back to the VIP where the
 * application reads its peer (getpeername, recvmsg). The backend comes from the XDP path's
 * own vips / rings / backends maps through ring_pick(): one source of truth, so health,
 * drain and weights apply exactly as in XDP. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "jhash.h"
#include "ring.h"
#include "vip.h"
#include "mon_rate.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifndef SOCK_REV_SIZE
#define SOCK_REV_SIZE 65536
#endif

#define SYS_PROCEED 1
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2

/* Load-time knobs, set by the Go loader (pkg/lb/socklb). */
/* One translated connect in sample_every is reported through sock_events (0: none). */
volatile const __u32 sample_every = 1;

/* The daemon's tunnel health probes (pkg/lb/probe) carry probe_mark in the high 16 bits
 * of SO_MARK: they must reach the VIP itself, encapsulated on egress, never a backend's
 * address. Set by the loader. */
volatile const __u32 probe_mark = 0x4c340000;
#define PROBE_MARK_MASK 0xffff0000U

/* Run-time knobs of the monitor, written by the daemon: MON_F_DROPS reports a connect or
 * datagram to a VIP with no usable backend, at most monitor_rate a second per CPU. */
volatile __u32 monitor_flags = 0;
volatile __u32 monitor_rate = 1000;

/* Reverse translation: (socket, backend address, port) -> the VIP the application named.
 * Keyed by the socket cookie, so two VIPs sharing a backend address and port are told
 * apart by socket. LRU: entries of closed sockets age out. */
struct sock_rev_key {
	__u64 cookie;
	__u8 addr[16];
	__u16 port; /* network order */
	__u8 family;
	__u8 pad;
	__u32 pad2;
};

struct sock_rev_val {
	__u8 addr[16];
	__u16 port; /* network order */
	__u8 family;
	__u8 pad;
};

struct sock_vip_counters {
	__u64 connects;   /* connect() to the VIP translated to a backend */
	__u64 sendmsgs;   /* unconnected UDP datagrams translated */
	__u64 no_backend; /* VIP with no usable backend: left untouched */
};

/* An event for the daemon: a sampled translated connect (SOCK_EV_CONNECT, read into the
 * per-VIP client table and the monitor) or a VIP with no usable backend
 * (SOCK_EV_NO_BACKEND, the monitor only). Decoded by hand (pkg/lb/socklb/events.go): keep
 * the two in step. */
#define SOCK_EV_CONNECT 0
#define SOCK_EV_NO_BACKEND 1

struct sock_event {
	__u64 cgroup_id;
	__u32 pid;
	__u32 vip_id;
	__u32 backend_id;
	char comm[16];
	__u8 kind;   /* SOCK_EV_* */
	__u8 proto;  /* PROTO_TCP, PROTO_UDP */
	__u8 family; /* of addr */
	__u8 is_connect;
	__u64 ts_ns;
	__u8 addr[16]; /* the VIP the socket named (IPv4 in the first 4 bytes) */
	__u16 port;    /* network order */
	__u16 pad;
	__u32 cpu;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SOCK_REV_SIZE);
	__type(key, struct sock_rev_key);
	__type(value, struct sock_rev_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct sock_vip_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} sock_events SEC(".maps");

/* The monitor's rate window and what it could not send, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mon_cpu);
} sock_monitor_state SEC(".maps");

/* A destination as the hooks see it: family, address (IPv4 in the first 4 bytes),
 * port in network order. */
struct dest {
	__u8 addr[16];
	__u16 port;
	__u8 family;
};

static __always_inline struct sock_vip_counters *sock_counters(__u32 vip_id)
{
	return bpf_map_lookup_elem(&sock_vip_stats, &vip_id);
}

static __always_inline void sock_event_send(__u8 kind, const struct dest *d, __u8 proto,
					    int is_connect, __u32 vip_id, __u32 backend_id)
{
	struct sock_event ev = {};

	ev.cgroup_id = bpf_get_current_cgroup_id();
	ev.pid = bpf_get_current_pid_tgid() >> 32;
	ev.vip_id = vip_id;
	ev.backend_id = backend_id;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	ev.kind = kind;
	ev.proto = proto;
	ev.family = d->family;
	ev.is_connect = is_connect;
	ev.ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(ev.addr, d->addr, 16);
	ev.port = d->port;
	ev.cpu = bpf_get_smp_processor_id();
	if (bpf_ringbuf_output(&sock_events, &ev, sizeof(ev), 0) && kind == SOCK_EV_NO_BACKEND) {
		__u32 zero = 0;
		struct mon_cpu *st = bpf_map_lookup_elem(&sock_monitor_state, &zero);

		if (st)
			st->lost_ring++;
	}
}

static __always_inline void sample_connect(const struct dest *d, __u8 proto, __u32 vip_id,
					   __u32 backend_id)
{
	if (!sample_every)
		return;
	if (sample_every > 1 && bpf_get_prandom_u32() % sample_every)
		return;
	sock_event_send(SOCK_EV_CONNECT, d, proto, 1, vip_id, backend_id);
}

/* no_backend_event reports a connect or datagram to a VIP that the socket LB left alone
 * for want of a backend, when the monitor asks for drops. */
static __always_inline void no_backend_event(const struct dest *d, __u8 proto, int is_connect,
					     __u32 vip_id)
{
	if (!(monitor_flags & MON_F_DROPS))
		return;
	__u32 zero = 0;
	struct mon_cpu *st = bpf_map_lookup_elem(&sock_monitor_state, &zero);

	if (!st || !mon_rate_ok(st, bpf_ktime_get_ns(), monitor_rate))
		return;
	st->sent++;
	sock_event_send(SOCK_EV_NO_BACKEND, d, proto, is_connect, vip_id, 0);
}

/* translate picks a backend for a connect or sendmsg to d and rewrites d in place. The
 * ring hash is a jhash of the socket cookie and the VIP id: a socket keeps its backend for
 * every datagram it sends to one VIP, and successive sockets spread over the ring. It
 * returns 1 when d was rewritten. Backends of another family than d cannot be reached by
 * this socket: d is left as it is (the packet then takes the network path to the VIP). */
static __always_inline int translate(__u64 cookie, struct dest *d, __u8 proto, int is_connect)
{
	struct vip_meta *vip = vip_find(d->addr, d->port, proto, d->family);

	if (!vip)
		return 0;
	__u32 vip_id = vip->id;
	struct sock_vip_counters *sc = sock_counters(vip_id);
	__u32 hash = jhash_3words((__u32)cookie, (__u32)(cookie >> 32), vip_id, 0);
	__u32 bid = ring_pick(vip, hash);
	struct backend *be = bid ? bpf_map_lookup_elem(&backends, &bid) : NULL;

	if (!be || !(be->flags & BACKEND_F_EXISTS) || be->family != d->family) {
		if (sc)
			sc->no_backend++;
		no_backend_event(d, proto, is_connect, vip_id);
		return 0;
	}

	struct sock_rev_key rk = {};
	struct sock_rev_val rv = {};

	rk.cookie = cookie;
	__builtin_memcpy(rk.addr, be->addr, 16);
	rk.port = d->port;
	rk.family = d->family;
	__builtin_memcpy(rv.addr, d->addr, 16);
	rv.port = d->port;
	rv.family = d->family;
	bpf_map_update_elem(&sock_rev, &rk, &rv, BPF_ANY);

	if (is_connect)
		sample_connect(d, proto, vip_id, bid); /* d still names the VIP */
	__builtin_memcpy(d->addr, be->addr, 16);
	if (sc) {
		if (is_connect)
			sc->connects++;
		else
			sc->sendmsgs++;
	}
	return 1;
}

/* reverse rewrites a backend peer back to the VIP this socket named. */
static __always_inline int reverse(__u64 cookie, struct dest *d)
{
	struct sock_rev_key rk = {};

	rk.cookie = cookie;
	__builtin_memcpy(rk.addr, d->addr, 16);
	rk.port = d->port;
	rk.family = d->family;
	struct sock_rev_val *rv = bpf_map_lookup_elem(&sock_rev, &rk);

	if (!rv)
		return 0;
	__builtin_memcpy(d->addr, rv->addr, 16);
	d->port = rv->port;
	return 1;
}

static __always_inline void dest_from4(struct dest *d, const struct bpf_sock_addr *ctx)
{
	__u32 a = ctx->user_ip4;

	__builtin_memcpy(d->addr, &a, 4);
	d->port = (__u16)ctx->user_port;
	d->family = FAMILY_V4;
}

static __always_inline void dest_to4(const struct dest *d, struct bpf_sock_addr *ctx)
{
	__u32 a;

	__builtin_memcpy(&a, d->addr, 4);
	ctx->user_ip4 = a;
	ctx->user_port = (__u32)d->port;
}

/* An AF_INET6 address: native IPv6, or v4-mapped ::ffff:a.b.c.d, which is looked up and
 * translated as the IPv4 address it maps. Returns 1 for v4-mapped. */
static __always_inline int dest_from6(struct dest *d, const struct bpf_sock_addr *ctx)
{
	__u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];

	d->port = (__u16)ctx->user_port;
	if (w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff)) {
		__builtin_memcpy(d->addr, &w3, 4);
		d->family = FAMILY_V4;
		return 1;
	}
	__builtin_memcpy(d->addr, &w0, 4);
	__builtin_memcpy(d->addr + 4, &w1, 4);
	__builtin_memcpy(d->addr + 8, &w2, 4);
	__builtin_memcpy(d->addr + 12, &w3, 4);
	d->family = FAMILY_V6;
	return 0;
}

static __always_inline void dest_to6(const struct dest *d, struct bpf_sock_addr *ctx)
{
	__u32 w[4];

	if (d->family == FAMILY_V4) {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0x0000ffff);
		__builtin_memcpy(&w[3], d->addr, 4);
	} else {
		__builtin_memcpy(w, d->addr, 16);
	}
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = (__u32)d->port;
}

/* is_probe: the socket is one of the daemon's tunnel health probes. */
static __always_inline int is_probe(const struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	return sk && (sk->mark & PROBE_MARK_MASK) == probe_mark;
}

/* sock_proto is the VIP protocol a socket can be balanced as: PROTO_TCP or PROTO_UDP, or 0
 * for anything else, which every hook leaves alone. The type alone is not enough: an ICMP
 * ping socket is SOCK_DGRAM and runs the connect and getpeername hooks, an SCTP socket is
 * SOCK_STREAM, a UDP-Lite one SOCK_DGRAM. */
static __always_inline __u8 sock_proto(const struct bpf_sock_addr *ctx)
{
	if (ctx->type == SOCK_STREAM_ && ctx->protocol == PROTO_TCP)
		return PROTO_TCP;
	if (ctx->type == SOCK_DGRAM_ && ctx->protocol == PROTO_UDP)
		return PROTO_UDP;
	return 0;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	struct dest d = {};
	__u8 proto = sock_proto(ctx);

	if (!proto || is_probe(ctx))
		return SYS_PROCEED;
	dest_from4(&d, ctx);
	if (translate(bpf_get_socket_cookie(ctx), &d, proto, 1))
		dest_to4(&d, ctx);
	return SYS_PROCEED;
}

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	struct dest d = {};
	__u8 proto = sock_proto(ctx);

	if (!proto || is_probe(ctx))
		return SYS_PROCEED;
	dest_from6(&d, ctx);
	if (translate(bpf_get_socket_cookie(ctx), &d, proto, 1))
		dest_to6(&d, ctx);
	return SYS_PROCEED;
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct dest d = {};

	if (sock_proto(ctx) != PROTO_UDP || is_probe(ctx))
		return SYS_PROCEED;
	dest_from4(&d, ctx);
	if (translate(bpf_get_socket_cookie(ctx), &d, PROTO_UDP, 0))
		dest_to4(&d, ctx);
	return SYS_PROCEED;
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct dest d = {};

	if (sock_proto(ctx) != PROTO_UDP || is_probe(ctx))
		return SYS_PROCEED;
	dest_from6(&d, ctx);
	if (translate(bpf_get_socket_cookie(ctx), &d, PROTO_UDP, 0))
		dest_to6(&d, ctx);
	return SYS_PROCEED;
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct dest d = {};

	if (sock_proto(ctx) != PROTO_UDP || is_probe(ctx))
		return SYS_PROCEED;
	dest_from4(&d, ctx);
	if (reverse(bpf_get_socket_cookie(ctx), &d))
		dest_to4(&d, ctx);
	return SYS_PROCEED;
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	struct dest d = {};

	if (sock_proto(ctx) != PROTO_UDP || is_probe(ctx))
		return SYS_PROCEED;
	dest_from6(&d, ctx);
	if (reverse(bpf_get_socket_cookie(ctx), &d))
		dest_to6(&d, ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	struct dest d = {};

	if (!sock_proto(ctx))
		return SYS_PROCEED;
	dest_from4(&d, ctx);
	if (reverse(bpf_get_socket_cookie(ctx), &d))
		dest_to4(&d, ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername6")
int sock_getpeername6(struct bpf_sock_addr *ctx)
{
	struct dest d = {};

	if (!sock_proto(ctx))
		return SYS_PROCEED;
	dest_from6(&d, ctx);
	if (reverse(bpf_get_socket_cookie(ctx), &d))
		dest_to6(&d, ctx);
	return SYS_PROCEED;
}
