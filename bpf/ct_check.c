//go:build ignore

/* ct_check.c: conntrack.h's ct_insert and ct_find run on a request carried in the packet,
 * so one table test drives the C and its Go mirror (pkg/lb/xdp/conntrack.go) from the
 * same cases. Built into the tests only. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "conntrack.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define CT_OP_INSERT 0
#define CT_OP_FIND 1

struct ct_req {
	__u32 op;
	__u32 result; /* insert: ct_insert's return (3: no bucket); find: 1 found, 0 not */
	__u64 digest;
	__u64 state; /* insert: the state to write; find: the state found */
};

SEC("xdp")
int ct_check(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ct_req *r = data;

	if ((void *)(r + 1) > data_end)
		return XDP_ABORTED;
	__u64 d = r->digest;
	struct ct_bucket *b1 = ct_bucket_of(d, 0);

	if (r->op == CT_OP_INSERT) {
		r->result = ct_insert_flow(d, r->state);
		return XDP_PASS;
	}
	__u64 st = 0;
	struct ct_way *w = ct_find(b1, d, &st);

	if (!w)
		w = ct_find(ct_bucket_of(d, 1), d, &st);
	r->result = w ? 1 : 0;
	r->state = st;
	return XDP_PASS;
}
