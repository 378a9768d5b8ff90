package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

// This file answers `l4lb flows`: what conntrack holds for one flow, and a summary of the
// whole table. Conntrack keeps a 64-bit digest of each flow's 5-tuple, not the tuple, so
// the table cannot be listed: a flow is found by computing its digest, and a summary
// counts entries by what their state word holds (backend, marks, a UDP entry's time).
// Everything here only reads maps; a lookup changes no entry, mark or counter.

// FlowOutcome is what a flow's next packet (not a SYN) would get from conntrack.
type FlowOutcome string

// The outcomes, in the program's order (bpf/xdp_lb.c).
const (
	// FlowNoVIP: the destination is no VIP; the packet is passed to the kernel.
	FlowNoVIP FlowOutcome = "no_vip"
	// FlowUntracked: no entry; the packet is hashed onto the ring (ct_miss) and writes one.
	FlowUntracked FlowOutcome = "untracked"
	// FlowFollowed: the entry is followed to its backend (ct_hit).
	FlowFollowed FlowOutcome = "followed"
	// FlowBackendGone: the entry names a backend id the backends map no longer has: the
	// packet is re-hashed and the entry rewritten (ct_rehash).
	FlowBackendGone FlowOutcome = "rehash_backend_gone"
	// FlowNotMember: the entry names a backend the VIP no longer has (vip_backends): the
	// packet is re-hashed and the entry rewritten (ct_not_member).
	FlowNotMember FlowOutcome = "rehash_not_member"
	// FlowUDPExpired: a UDP entry idle past udp_timeout: re-hashed (ct_udp_expired).
	FlowUDPExpired FlowOutcome = "rehash_udp_expired"
)

// FlowEntry is what conntrack holds for one flow and what the flow's next packet would
// get from it.
type FlowEntry struct {
	Flow   Flow
	Digest uint64
	// Buckets are the flow's first and second buckets (equal when both halves of the
	// digest name one). Searched is how many of them a packet reads: the second only
	// when the first does not hold the flow.
	Buckets  [2]uint32
	Searched int
	// BusyWays counts the ways of the searched buckets that a CPU was writing as they
	// were read (CT_BUSY): an entry being written for this flow reads as missing.
	BusyWays int

	Tracked    bool
	Bucket     uint32 // the bucket holding the entry
	Way        int
	State      uint64 // the way's state word, raw
	BackendID  uint32
	Ref, Est   bool   // CT_REF, CT_EST
	Busy       bool   // CT_BUSY (a found entry never has it: a way being written names no backend)
	Generation uint32 // the claim generation (bumped each time the way is taken for a flow)
	// HasAge: the entry has a time, which UDP entries have (the last packet that
	// refreshed it, to 2^CT_TIME_SHIFT ns, about 17 ms) and TCP entries have not.
	HasAge  bool
	Age     time.Duration
	Expired bool // a UDP entry idle past udp_timeout

	BackendLive bool       // the backends map has the entry's backend id
	Backend     netip.Addr // its address (when live)

	VIPFound bool
	VIP      lb.VIPKey // the VIP the destination matches: its own port's, else the any-port VIP
	VIPID    uint32
	// Member: the VIP has the entry's backend in vip_backends. MembersChecked: the
	// program checks membership (members_ready; off while the first pass after an
	// upgrade fills vip_backends, when every entry is followed).
	Member         bool
	MembersChecked bool

	// RingBackend is the backend the VIP's ring gives the flow now (what a SYN, a miss
	// or a re-hash gets), 0 if none; RingLive and RingAddr say whether it exists and where.
	RingBackend uint32
	RingLive    bool
	RingAddr    netip.Addr

	Outcome FlowOutcome
}

// ErrFlow: FlowLookup was given no TCP or UDP flow of one address family.
var ErrFlow = errors.New("bad flow")

// FlowLookup reads what conntrack holds for f (TCP or UDP; source and destination of one
// family) and what the flow's next packet would get, as the program decides it. It reads
// the maps only.
func (d *Dataplane) FlowLookup(f Flow) (FlowEntry, error) {
	f.Src, f.Dst = f.Src.Unmap(), f.Dst.Unmap()
	if err := checkFlow(f); err != nil {
		return FlowEntry{}, err
	}
	e := FlowEntry{Flow: f, Digest: ctDigest(f)}
	m := d.objs.Conntrack
	if err := isCtMap(m); err != nil {
		return e, err
	}
	n := m.MaxEntries()
	for half := range 2 {
		idx := ctBucketIndex(e.Digest, n, half)
		e.Buckets[half] = idx
		if e.Tracked {
			continue
		}
		e.Searched++
		w, state, busy, err := ctReadWay(m, idx, e.Digest)
		if err != nil {
			return e, err
		}
		e.BusyWays += busy
		if w >= 0 {
			e.Tracked, e.Bucket, e.Way = true, idx, w
			e.describeState(state, monotonicNow(), d.opts.UDPTimeout)
		}
	}
	if e.Tracked {
		if err := d.readBackend(e.BackendID, &e.BackendLive, &e.Backend); err != nil {
			return e, err
		}
	}
	var meta xdplbVipMeta
	var err error
	e.VIPFound, e.VIP, meta, err = d.findVIP(f)
	if err != nil {
		return e, err
	}
	if e.VIPFound {
		e.VIPID = meta.Id
		if e.Tracked {
			if e.Member, err = d.isMember(meta.Id, e.BackendID); err != nil {
				return e, err
			}
		}
		var ready uint32
		if err := d.objs.MembersReady.Get(&ready); err != nil {
			return e, fmt.Errorf("read members_ready: %w", err)
		}
		e.MembersChecked = ready != 0
		if e.RingBackend, err = d.ringPick(meta, f); err != nil {
			return e, err
		}
		if e.RingBackend != 0 {
			if err := d.readBackend(e.RingBackend, &e.RingLive, &e.RingAddr); err != nil {
				return e, err
			}
		}
	}
	e.Outcome = e.outcome()
	return e, nil
}

func checkFlow(f Flow) error {
	if !f.Src.IsValid() || !f.Dst.IsValid() {
		return fmt.Errorf("%w: source and destination addresses are needed", ErrFlow)
	}
	if f.Src.Is4() != f.Dst.Is4() {
		return fmt.Errorf("%w: source %s and destination %s are of different families", ErrFlow, f.Src, f.Dst)
	}
	if f.Src.Zone() != "" || f.Dst.Zone() != "" {
		return fmt.Errorf("%w: an address with a zone is no flow's", ErrFlow)
	}
	if f.Proto != lb.ProtoTCP && f.Proto != lb.ProtoUDP {
		return fmt.Errorf("%w: protocol %s: conntrack holds tcp and udp flows", ErrFlow, f.Proto)
	}
	return nil
}

// ctReadWay finds digest in bucket idx as ct_find does, reading the bucket twice: a way
// is taken only if its digest and claim (backend, generation) read the same both times,
// so a way rewritten between the reads reads as a miss. It returns the way (-1: none)
// with the state read first, and how many ways were being written (CT_BUSY).
func ctReadWay(m *ebpf.Map, idx uint32, digest uint64) (way int, state uint64, busy int, err error) {
	var b [2]xdplbCtBucket
	for i := range b {
		if err := m.Lookup(idx, &b[i]); err != nil {
			return -1, 0, 0, fmt.Errorf("read conntrack bucket %d: %w", idx, err)
		}
	}
	way, state, busy = ctFindStable(&b[0], &b[1], digest)
	return way, state, busy, nil
}

// ctFindStable is ct_find over two reads of one bucket.
func ctFindStable(first, again *xdplbCtBucket, digest uint64) (way int, state uint64, busy int) {
	way = -1
	for i, w := range first.Way {
		w2 := again.Way[i]
		if w.State&ctBusy != 0 || w2.State&ctBusy != 0 {
			busy++
		}
		if way < 0 && w.State&ctBackendMask != 0 && w.Digest == digest &&
			w2.Digest == digest && (w.State^w2.State)&(ctBackendMask|ctGenMask) == 0 {
			way, state = i, w.State
		}
	}
	return way, state, busy
}

// describeState fills the fields a way's state word gives; now is the monotonic clock in
// ns (the program's bpf_ktime_get_ns).
func (e *FlowEntry) describeState(s uint64, now uint64, udpTimeout time.Duration) {
	e.State = s
	e.BackendID = uint32(s & ctBackendMask)
	e.Ref, e.Est, e.Busy = s&ctRef != 0, s&ctEst != 0, s&ctBusy != 0
	e.Generation = uint32((s & ctGenMask) >> ctGenShift)
	if e.Flow.Proto == lb.ProtoUDP {
		e.HasAge = true
		e.Age, e.Expired = udpAge(s, now, udpTimeout)
	}
}

// udpAge is how long ago a UDP entry's time was written, and whether the program takes
// it as expired: more than udp_timeout in its clock's units (bpf/xdp_lb.c).
func udpAge(state, now uint64, udpTimeout time.Duration) (time.Duration, bool) {
	seen := uint32(state >> ctSeenShift)
	ticks := uint32(now>>ctTimeShift) - seen
	return time.Duration(uint64(ticks) << ctTimeShift), ticks > uint32(uint64(udpTimeout.Nanoseconds())>>ctTimeShift)
}

// monotonicNow is the clock bpf_ktime_get_ns reads.
func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}

// outcome is what the program does with a non-SYN packet of the flow.
func (e *FlowEntry) outcome() FlowOutcome {
	switch {
	case !e.VIPFound:
		return FlowNoVIP
	case !e.Tracked:
		return FlowUntracked
	case !e.BackendLive:
		return FlowBackendGone
	case !e.Member && e.MembersChecked:
		return FlowNotMember
	case e.Expired:
		return FlowUDPExpired
	}
	return FlowFollowed
}

// readBackend reads backend id from the backends map: whether it is live, and where.
func (d *Dataplane) readBackend(id uint32, live *bool, addr *netip.Addr) error {
	*live, *addr = false, netip.Addr{}
	if id == 0 || id >= MaxBackends {
		return nil
	}
	var be xdplbBackend
	if err := d.objs.Backends.Lookup(id, &be); err != nil {
		return fmt.Errorf("read backend %d: %w", id, err)
	}
	if be.Flags&backendExists != 0 {
		*live, *addr = true, addrFrom16(be.Addr, be.Family)
	}
	return nil
}

// findVIP mirrors vip_find: the VIP of the flow's destination port, else the address's
// any-port VIP.
func (d *Dataplane) findVIP(f Flow) (bool, lb.VIPKey, xdplbVipMeta, error) {
	var meta xdplbVipMeta
	for _, port := range []uint16{f.Dport, 0} {
		k := lb.VIPKey{Addr: f.Dst, Port: port, Proto: f.Proto}
		vk := vipKey(k)
		err := d.objs.Vips.Lookup(&vk, &meta)
		if err == nil {
			return true, k, meta, nil
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, lb.VIPKey{}, meta, fmt.Errorf("read vip %s: %w", k, err)
		}
	}
	return false, lb.VIPKey{}, meta, nil
}

// isMember mirrors member_index: whether vip_backends holds the pair, in the bucket its
// key hashes to or the next one.
func (d *Dataplane) isMember(vipID, backendID uint32) (bool, error) {
	m := d.objs.VipBackends
	n := m.MaxEntries()
	shift := pairShift(n)
	key := pairKey(vipID, backendID)
	first := (key * pairHashMul) >> shift
	for _, b := range []uint32{first, (first + 1) & (n - 1)} {
		var pb xdplbPairBucket
		if err := m.Lookup(b, &pb); err != nil {
			return false, fmt.Errorf("read vip_backends bucket %d: %w", b, err)
		}
		if slices.Contains(pb.Key[:], key) {
			return true, nil
		}
	}
	return false, nil
}

// ringPick mirrors ring_pick: the backend id the VIP's active ring gives the flow, 0 if
// the VIP has no ring.
func (d *Dataplane) ringPick(meta xdplbVipMeta, f Flow) (uint32, error) {
	var sel xdplbRingSelect
	if err := d.objs.RingSel.Lookup(meta.Id, &sel); err != nil {
		return 0, fmt.Errorf("read ring selector of vip %d: %w", meta.Id, err)
	}
	h := sel.Half[sel.Active&1]
	if h.Size == 0 {
		return 0, nil
	}
	slot := RingSlot(d.opts.SlotMapping, FlowHash(f, lb.VIPFlags(meta.Flags)), h.Size)
	var blk xdplbRingBlock
	if err := d.objs.Rings.Lookup(h.Block+slot/uint32(RingBlockSlots), &blk); err != nil {
		return 0, fmt.Errorf("read ring block of vip %d: %w", meta.Id, err)
	}
	return uint32(blk.Slot[slot%uint32(RingBlockSlots)]), nil
}

// FlowSummary describes the whole conntrack table, read in one batch walk. The walk is
// not a snapshot: packets go on writing while it reads, and the counters are read after
// it.
type FlowSummary struct {
	Entries, Capacity, Buckets int
	// BucketFill[n] is how many buckets have n ways holding an entry.
	BucketFill [ctWays + 1]int
	// BusyWays were being written as they were read (CT_BUSY), not counted as entries.
	BusyWays int
	// Established entries were found by a later packet of their flow (CT_EST); of those,
	// Referenced were found since their bucket last gave them a second chance (CT_REF).
	// OnePacket entries were never found again (one packet, or a spoofed SYN).
	Established, Referenced, OnePacket int
	// Timed entries have a time: UDP entries (a TCP entry has none); UDPExpired of them
	// are idle past udp_timeout, so their flow's next packet is re-hashed.
	Timed, UDPExpired int
	// ByBackend counts the entries naming each backend id.
	ByBackend map[uint32]int
	// Backends are the live backends (backends map); Members the VIP ids that have each
	// backend id (vip_backends); VIPs the programmed VIPs by id. An entry's digest does
	// not say its VIP: a backend of one VIP gives that VIP its entries, a backend shared
	// by VIPs gives them to all of them together (VIPFlows).
	Backends map[uint32]netip.Addr
	Members  map[uint32][]uint32
	VIPs     map[uint32]lb.VIPKey
	// Counters are the data plane's ct_* counters.
	Counters map[string]uint64
	// Walk is how long the batch walk of the conntrack table took.
	Walk time.Duration
}

// ctTally adds up buckets for a FlowSummary.
type ctTally struct {
	s          *FlowSummary
	now        uint64
	udpTimeout time.Duration
}

func (t *ctTally) add(b *xdplbCtBucket) {
	s := t.s
	s.Buckets++
	used := 0
	for _, w := range b.Way {
		if w.State&ctBusy != 0 {
			s.BusyWays++
		}
		id := uint32(w.State & ctBackendMask)
		if id == 0 {
			continue
		}
		used++
		s.ByBackend[id]++
		switch {
		case w.State&ctEst == 0:
			s.OnePacket++
		case w.State&ctRef != 0:
			s.Established++
			s.Referenced++
		default:
			s.Established++
		}
		if w.State>>ctSeenShift != 0 {
			s.Timed++
			if _, expired := udpAge(w.State, t.now, t.udpTimeout); expired {
				s.UDPExpired++
			}
		}
	}
	s.Entries += used
	s.BucketFill[used]++
}

// FlowSummary walks the conntrack table in batches and reads what attributes its
// entries to VIPs. It reads the maps only.
func (d *Dataplane) FlowSummary() (FlowSummary, error) {
	s := FlowSummary{ByBackend: map[uint32]int{}, Members: map[uint32][]uint32{}, VIPs: map[uint32]lb.VIPKey{}}
	m := d.objs.Conntrack
	if err := isCtMap(m); err != nil {
		return s, err
	}
	s.Capacity = ConntrackCapacity(m)
	t := ctTally{s: &s, now: monotonicNow(), udpTimeout: d.opts.UDPTimeout}
	start := time.Now()
	if err := ctWalk(m, t.add); err != nil {
		return s, err
	}
	s.Walk = time.Since(start)
	var err error
	if s.Backends, err = d.Backends(); err != nil {
		return s, err
	}
	if err := batchWalk(d.objs.VipBackends, func(_ *uint32, b *xdplbPairBucket) {
		for _, key := range b.Key {
			if key != 0 {
				s.Members[key&0xffff] = append(s.Members[key&0xffff], key>>16)
			}
		}
	}); err != nil {
		return s, err
	}
	for _, ids := range s.Members {
		slices.Sort(ids)
	}
	vips, err := d.VIPs()
	if err != nil {
		return s, err
	}
	for k, id := range vips {
		s.VIPs[id] = k
	}
	stats, err := d.Stats()
	if err != nil {
		return s, err
	}
	s.Counters = ctCounters(stats)
	return s, nil
}

// ctCounters keeps the ct_* counters of the data plane's named counters.
func ctCounters(stats map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range stats {
		if len(k) > 3 && k[:3] == "ct_" {
			out[k] = v
		}
	}
	return out
}

// VIPFlows is a VIP's share of the conntrack entries. Entries whose backend only this
// VIP has are its own (Own); entries whose backend other VIPs have too may be any of
// theirs (Shared): the VIP has between Own and Own+Shared entries.
type VIPFlows struct {
	Own, Shared int
}

// VIPFlows attributes the entries to the VIPs that have their backends. Entries naming
// a backend no VIP has are in the second result (their flows are re-hashed when they
// send again).
func (s *FlowSummary) VIPFlows() (map[uint32]VIPFlows, int) {
	out := map[uint32]VIPFlows{}
	orphans := 0
	for be, n := range s.ByBackend {
		vips := s.Members[be]
		switch len(vips) {
		case 0:
			orphans += n
		case 1:
			v := out[vips[0]]
			v.Own += n
			out[vips[0]] = v
		default:
			for _, id := range vips {
				v := out[id]
				v.Shared += n
				out[id] = v
			}
		}
	}
	return out, orphans
}
