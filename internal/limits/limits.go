// Package limits holds the numbers the Go side shares with the BPF programs: the table
// sizes, map layout and flag bits the programs are built with, generated from
// bpf/lb_consts.h through bpf/consts.c, and the bounds the configuration accepts.
//
// It imports no other l4lb package, so that the configuration, the model and the data
// planes can all use it without importing one another.
package limits

// VIPs.
const (
	// VIPMapSize is MAX_VIPS: the entries of the vips, vip_addrs, ring_sel and vip_stats
	// maps. Other per-VIP maps are indexed by the VIP id (vip_meta.id < VIPMapSize) too.
	VIPMapSize = uint32(constsLimitLIMIT_MAX_VIPS)
	// MaxVIPs is how many VIPs one node serves. VIP ids are 0..MaxVIPs-1: every slot of the
	// VIP maps is usable.
	MaxVIPs = int(VIPMapSize)
)

// Backends.
const (
	// BackendMapSize is MAX_BACKENDS: the entries of the backends map,
	// indexed by backend id.
	BackendMapSize = uint32(constsLimitLIMIT_MAX_BACKENDS)
	// MaxBackends is how many distinct backend addresses one node serves. Backend id 0 is
	// reserved (it marks an empty Maglev ring slot), so ids are 1..MaxBackends and one
	// slot of the backends map is never used.
	MaxBackends = int(BackendMapSize) - 1
)

// Maglev ring, one per VIP, with its own size (vips[].ring_size, default xdp.ring_size): two
// halves of 16-bit slots in the flat rings array (pkg/lb/xdp/rings.go), one read, one
// rewritten whole on every change of the VIP: 4 bytes of kernel memory per slot and VIP.
const (
	// DefaultRingSize is RING_SIZE, the default xdp.ring_size: 256 KiB of kernel memory per
	// VIP, and 100 slots per backend for up to 655 backends behind one VIP.
	DefaultRingSize = uint32(constsLimitLIMIT_RING_SIZE)
	// MinRingSize is the smallest ring accepted: below this, one backend more or less
	// moves a large share of the flows and weights are coarse.
	MinRingSize = 257
	// MaxRingSize is the largest ring accepted, the largest prime below 2^20. It is enough
	// for every backend the data plane holds behind one VIP: Maglev spreads flows evenly
	// when the ring has at least 100 slots per backend, and 100 x MaxBackends is 409,500.
	// It costs 4 MiB of kernel memory per VIP, and the ring is rebuilt and written whole on
	// every change of the VIP.
	MaxRingSize = 1048573
)

// Conntrack: an array of 4-way buckets (bpf/conntrack.h) allocated at load time, 16 bytes
// of kernel memory per entry (a 64-bit flow digest and a state word).
const (
	// DefaultConntrackSize is CT_SIZE, the default xdp.conntrack_size (16 MiB). A flow
	// can take only the ways of its two buckets, so the table is sized at about four
	// times the flows it is meant to hold: at a quarter full, almost no flow finds both
	// its buckets full (docs/architecture.md, Conntrack).
	DefaultConntrackSize = uint32(constsLimitLIMIT_CT_SIZE)
	// MinConntrackSize is the smallest conntrack table accepted.
	MinConntrackSize = 1024
	// MaxConntrackSize is the largest conntrack table accepted: 64 Mi entries, 1 GiB of
	// kernel memory, locked and allocated when the program loads.
	MaxConntrackSize = 1 << 26
	// ConntrackEntryBytes is the kernel memory one conntrack entry takes: a 64-byte
	// bucket holds four.
	ConntrackEntryBytes = int(constsLimitLIMIT_CT_ENTRY_BYTES)
)

// MaxLocalVIPs is MAX_LOCAL_VIPS: how many VIP addresses the backend-side decap program
// recognises.
const MaxLocalVIPs = int(constsLimitLIMIT_MAX_LOCAL_VIPS)

// MaxDecapAllow is MAX_DECAP_ALLOW: how many outer source prefixes of each family the
// decap program accepts (l4lb decap --allow-from).
const MaxDecapAllow = int(constsLimitLIMIT_MAX_DECAP_ALLOW)

// IsPrime reports whether n is prime (ring sizes must be). Trial division in 64 bits, so
// i*i cannot overflow near the top of uint32.
func IsPrime(n uint32) bool {
	if n < 2 {
		return false
	}
	for i := uint64(2); i*i <= uint64(n); i++ {
		if uint64(n)%i == 0 {
			return false
		}
	}
	return true
}

// The monitor's events and the trace's record (bpf/monitor.h, bpf/xdp_lb.c).
const (
	MonFlagDrops      = uint32(constsObserveOBSERVE_MON_DROPS)
	MonFlagFlows      = uint32(constsObserveOBSERVE_MON_FLOWS)
	MonCapture        = int(constsObserveOBSERVE_MON_CAP)
	MonTypeDrop       = uint8(constsObserveOBSERVE_MON_T_DROP)
	MonTypeFlow       = uint8(constsObserveOBSERVE_MON_T_FLOW)
	MonFlowNew        = uint8(constsObserveOBSERVE_MON_FLOW_NEW)
	MonFlowMiss       = uint8(constsObserveOBSERVE_MON_FLOW_MISS)
	MonFlowMoved      = uint8(constsObserveOBSERVE_MON_FLOW_MOVED)
	MonEventVIP       = uint8(constsObserveOBSERVE_MON_EF_VIP)
	MonEventBackend   = uint8(constsObserveOBSERVE_MON_EF_BACKEND)
	MonEventPrev      = uint8(constsObserveOBSERVE_MON_EF_PREV)
	TraceMagic        = uint32(constsObserveOBSERVE_TRACE_MAGIC)
	TraceRecordBytes  = int(constsObserveOBSERVE_TRACE_RECORD_BYTES)
	TraceVIP          = uint8(constsObserveOBSERVE_TRACE_F_VIP)
	TraceAllow        = uint8(constsObserveOBSERVE_TRACE_F_ALLOW)
	TraceSYN          = uint8(constsObserveOBSERVE_TRACE_F_SYN)
	TraceCtFound      = uint8(constsObserveOBSERVE_TRACE_F_CT_FOUND)
	TraceCtFollowed   = uint8(constsObserveOBSERVE_TRACE_F_CT_FOLLOWED)
	TraceRing         = uint8(constsObserveOBSERVE_TRACE_F_RING)
	TraceWriteNew     = uint8(constsObserveOBSERVE_TRACE_F_WRITE_NEW)
	TraceWriteUpdate  = uint8(constsObserveOBSERVE_TRACE_F_WRITE_UPDATE)
	TraceMovedGone    = uint8(constsObserveOBSERVE_TRACE_MOVED_GONE)
	TraceMovedNotMemb = uint8(constsObserveOBSERVE_TRACE_MOVED_NOT_MEMBER)
	TraceMovedExpired = uint8(constsObserveOBSERVE_TRACE_MOVED_EXPIRED)
)
