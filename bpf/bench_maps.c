//go:build ignore

/* bench_maps.c: BenchmarkKernelMapUpdate's programs (pkg/lb/xdp, test only). Each run
 * writes one entry with a 40-byte key (conntrack's key before the bucket table) into a
 * kernel map, so the benchmark can show what one bpf_map_update_elem costs, against a
 * program that writes nothing. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct key40 {
	__u32 w[10];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 20);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct key40);
	__type(value, __u64);
} lru_percpu_lists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct key40);
	__type(value, __u64);
} hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} seq SEC(".maps");

/* next: a new key per run (new_key) or the same one (0). */
static __always_inline int update(void *map, int new_key)
{
	__u32 zero = 0;
	__u32 *n = bpf_map_lookup_elem(&seq, &zero);

	if (!n)
		return XDP_ABORTED;
	struct key40 k = {};
	__u64 v = *n;

	k.w[9] = 77;
	if (new_key)
		k.w[0] = (*n)++;
	bpf_map_update_elem(map, &k, &v, BPF_ANY);
	return XDP_PASS;
}

SEC("xdp") int none(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 *n = bpf_map_lookup_elem(&seq, &zero);

	if (n)
		(*n)++;
	return XDP_PASS;
}

SEC("xdp") int lru_new(struct xdp_md *ctx) { return update(&lru_percpu_lists, 1); }
SEC("xdp") int lru_same(struct xdp_md *ctx) { return update(&lru_percpu_lists, 0); }
SEC("xdp") int hash_new(struct xdp_md *ctx) { return update(&hash, 1); }
SEC("xdp") int hash_same(struct xdp_md *ctx) { return update(&hash, 0); }
