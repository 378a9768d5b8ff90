//go:build ignore

/* consts.c: no program. The constants of lb_consts.h, flowhash.h and jhash.h the Go side
 * uses too, as enums that bpf2go emits (-type) into internal/limits, so Go never writes
 * them again; the values are the macros themselves. The object is never loaded. */

#include <linux/types.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "flowhash.h"

/* Table sizes. */
enum limit {
	LIMIT_MAX_VIPS = MAX_VIPS,
	LIMIT_MAX_BACKENDS = MAX_BACKENDS,
	LIMIT_RING_SIZE = RING_SIZE,
	LIMIT_CT_SIZE = CT_SIZE,
	LIMIT_CT_ENTRY_BYTES = sizeof(struct ct_way),
	LIMIT_MAX_LOCAL_VIPS = MAX_LOCAL_VIPS,
	LIMIT_MAX_DECAP_ALLOW = MAX_DECAP_ALLOW,
};

/* The map addresses' family byte (vip_key, backend, flow_key). */
enum family {
	FAMILY_IPV4 = FAMILY_V4,
	FAMILY_IPV6 = FAMILY_V6,
};

/* Conntrack (conntrack.h): the bucket shape, the state word's bits (and the clock's unit
 * of a UDP entry's time), the digest's seed and the ranks of a way for a new flow. */
enum ct_layout {
	CT_LAYOUT_WAYS = CT_WAYS,
	CT_LAYOUT_BACKEND_MASK = CT_BACKEND_MASK,
	CT_LAYOUT_REF = CT_REF,
	CT_LAYOUT_BUSY = CT_BUSY,
	CT_LAYOUT_EST = CT_EST,
	CT_LAYOUT_GEN_SHIFT = CT_GEN_SHIFT,
	CT_LAYOUT_GEN_MASK = CT_GEN_MASK,
	CT_LAYOUT_SEEN_SHIFT = CT_SEEN_SHIFT,
	CT_LAYOUT_TIME_SHIFT = CT_TIME_SHIFT,
	CT_LAYOUT_HASH_SEED = CT_HASH_SEED,
	CT_LAYOUT_RANK_SAME = CT_RANK_SAME,
	CT_LAYOUT_RANK_EMPTY = CT_RANK_EMPTY,
	CT_LAYOUT_RANK_ONE_PACKET = CT_RANK_ONE_PACKET,
	CT_LAYOUT_RANK_IDLE = CT_RANK_IDLE,
	CT_LAYOUT_RANK_NONE = CT_RANK_NONE,
};

/* The other maps' shapes: ring blocks, membership buckets, next hops, the /24 directory of
 * the IPv4 deny list, and the hash's initial value. */
enum map_layout {
	MAP_LAYOUT_RING_BLOCK_SLOTS = RING_BLOCK_SLOTS,
	MAP_LAYOUT_PAIR_WAYS = PAIR_WAYS,
	MAP_LAYOUT_PAIR_HASH_MUL = PAIR_HASH_MUL,
	MAP_LAYOUT_MAX_IFINDEX = MAX_IFINDEX,
	MAP_LAYOUT_DENY4_DIR_SIZE = DENY4_DIR_SIZE,
	MAP_LAYOUT_DENY4_DIR_LONG_SHIFT = DENY4_DIR_LONG_SHIFT,
	MAP_LAYOUT_DENY4_DIR_OWNER_MASK = DENY4_DIR_OWNER_MASK,
	MAP_LAYOUT_JHASH_INITVAL = JHASH_INITVAL,
};

/* Flag bits of map values. */
enum flag {
	FLAG_VIP_HASH_NO_SPORT = VIP_F_HASH_NO_SPORT,     /* vip_meta.flags */
	FLAG_BACKEND_EXISTS = BACKEND_F_EXISTS,           /* backend.flags */
	FLAG_VIP_POLICY_ALLOW = VIP_POLICY_F_ALLOW,       /* vip_policy.flags */
	FLAG_PREFILTER_DENY4 = PREFILTER_F_DENY4,         /* prefilter_on */
	FLAG_PREFILTER_DENY6 = PREFILTER_F_DENY6,         /* prefilter_on */
	FLAG_PREFILTER_DENY4_DIR = PREFILTER_F_DENY4_DIR, /* prefilter_on */
};

/* Puts each enum in BTF for bpf2go. */
enum limit consts_limit;
enum family consts_family;
enum ct_layout consts_ct_layout;
enum map_layout consts_map_layout;
enum flag consts_flag;
