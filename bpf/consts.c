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

/* The monitor's events and the trace's record (monitor.h, xdp_lb.c). */
enum observe {
	OBSERVE_MON_DROPS = MON_F_DROPS,       /* monitor_flags */
	OBSERVE_MON_FLOWS = MON_F_FLOWS,       /* monitor_flags */
	OBSERVE_MON_CAP = MON_CAP,             /* bytes of a frame an event carries */
	OBSERVE_MON_T_DROP = MON_T_DROP,       /* mon_event.type */
	OBSERVE_MON_T_FLOW = MON_T_FLOW,       /* mon_event.type */
	OBSERVE_MON_FLOW_NEW = MON_FLOW_NEW,   /* mon_event.reason of a flow event */
	OBSERVE_MON_FLOW_MISS = MON_FLOW_MISS,
	OBSERVE_MON_FLOW_MOVED = MON_FLOW_MOVED,
	OBSERVE_MON_EF_VIP = MON_EF_VIP,       /* mon_event.flags */
	OBSERVE_MON_EF_BACKEND = MON_EF_BACKEND,
	OBSERVE_MON_EF_PREV = MON_EF_PREV,
	OBSERVE_TRACE_MAGIC = TRACE_MAGIC,
	OBSERVE_TRACE_RECORD_BYTES = sizeof(struct trace_record),
	OBSERVE_TRACE_F_VIP = TRACE_F_VIP,     /* trace_record.flags */
	OBSERVE_TRACE_F_ALLOW = TRACE_F_ALLOW,
	OBSERVE_TRACE_F_SYN = TRACE_F_SYN,
	OBSERVE_TRACE_F_CT_FOUND = TRACE_F_CT_FOUND,
	OBSERVE_TRACE_F_CT_FOLLOWED = TRACE_F_CT_FOLLOWED,
	OBSERVE_TRACE_F_RING = TRACE_F_RING,
	OBSERVE_TRACE_F_WRITE_NEW = TRACE_F_WRITE_NEW,
	OBSERVE_TRACE_F_WRITE_UPDATE = TRACE_F_WRITE_UPDATE,
	OBSERVE_TRACE_MOVED_GONE = TRACE_MOVED_GONE, /* trace_record.detail bits 2-3 */
	OBSERVE_TRACE_MOVED_NOT_MEMBER = TRACE_MOVED_NOT_MEMBER,
	OBSERVE_TRACE_MOVED_EXPIRED = TRACE_MOVED_EXPIRED,
};

/* Puts each enum in BTF for bpf2go. */
enum limit consts_limit;
enum family consts_family;
enum ct_layout consts_ct_layout;
enum map_layout consts_map_layout;
enum flag consts_flag;
enum observe consts_observe;
