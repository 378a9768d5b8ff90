package limits

// The map layout the Go loaders share with the BPF programs, as bpf2go emits it from the
// C: the Go side never writes these values itself.

// Address families of the maps' family byte (FAMILY_V4, FAMILY_V6).
const (
	FamilyV4 = uint8(constsFamilyFAMILY_IPV4)
	FamilyV6 = uint8(constsFamilyFAMILY_IPV6)
)

// Conntrack (bpf/conntrack.h): ways per bucket, the bits of a way's state word (a UDP
// entry's last-seen time is the monotonic clock in units of 2^CTTimeShift ns), the
// digest's seed and the ranks of a way for a new flow (ct_victim), best first.
const (
	CTWays        = uint32(constsCtLayoutCT_LAYOUT_WAYS)
	CTBackendMask = uint64(constsCtLayoutCT_LAYOUT_BACKEND_MASK)
	CTRef         = uint64(constsCtLayoutCT_LAYOUT_REF)
	CTBusy        = uint64(constsCtLayoutCT_LAYOUT_BUSY)
	CTEst         = uint64(constsCtLayoutCT_LAYOUT_EST)
	CTGenShift    = uint64(constsCtLayoutCT_LAYOUT_GEN_SHIFT)
	CTGenMask     = uint64(constsCtLayoutCT_LAYOUT_GEN_MASK)
	CTSeenShift   = uint64(constsCtLayoutCT_LAYOUT_SEEN_SHIFT)
	CTTimeShift   = uint64(constsCtLayoutCT_LAYOUT_TIME_SHIFT)
	CTHashSeed    = uint32(constsCtLayoutCT_LAYOUT_HASH_SEED)

	CTRankSame      = int(constsCtLayoutCT_LAYOUT_RANK_SAME)
	CTRankEmpty     = int(constsCtLayoutCT_LAYOUT_RANK_EMPTY)
	CTRankOnePacket = int(constsCtLayoutCT_LAYOUT_RANK_ONE_PACKET)
	CTRankIdle      = int(constsCtLayoutCT_LAYOUT_RANK_IDLE)
	CTRankNone      = int(constsCtLayoutCT_LAYOUT_RANK_NONE)
)

// The other maps' shapes: slots per rings entry, (VIP, backend) pairs per vip_backends
// bucket and the pair hash's multiplier, the nexthops size, the IPv4 deny directory's
// u64 entries and the fields of its u16s, and jhash's initial value.
const (
	RingBlockSlots    = uint64(constsMapLayoutMAP_LAYOUT_RING_BLOCK_SLOTS)
	PairWays          = uint32(constsMapLayoutMAP_LAYOUT_PAIR_WAYS)
	PairHashMul       = uint32(constsMapLayoutMAP_LAYOUT_PAIR_HASH_MUL)
	MaxIfindex        = int(constsMapLayoutMAP_LAYOUT_MAX_IFINDEX)
	Deny4DirEntries   = uint32(constsMapLayoutMAP_LAYOUT_DENY4DIR_SIZE)
	Deny4DirLongShift = uint16(constsMapLayoutMAP_LAYOUT_DENY4DIR_LONG_SHIFT)
	Deny4DirOwnerMask = uint16(constsMapLayoutMAP_LAYOUT_DENY4DIR_OWNER_MASK)
	JhashInitval      = uint32(constsMapLayoutMAP_LAYOUT_JHASH_INITVAL)
)

// Flag bits of map values.
const (
	FlagVIPHashNoSport    = uint32(constsFlagFLAG_VIP_HASH_NO_SPORT)  // vip_meta.flags
	FlagBackendExists     = uint8(constsFlagFLAG_BACKEND_EXISTS)      // backend.flags
	FlagVIPPolicyAllow    = uint32(constsFlagFLAG_VIP_POLICY_ALLOW)   // vip_policy.flags
	FlagPrefilterDeny4    = uint32(constsFlagFLAG_PREFILTER_DENY4)    // prefilter_on
	FlagPrefilterDeny6    = uint32(constsFlagFLAG_PREFILTER_DENY6)    // prefilter_on
	FlagPrefilterDeny4Dir = uint32(constsFlagFLAG_PREFILTER_DENY4DIR) // prefilter_on
)
