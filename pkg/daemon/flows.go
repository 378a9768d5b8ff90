package daemon

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// The daemon's side of `l4lb flows` (GET /v1/flows): the XDP data plane's conntrack,
// read through pkg/lb/xdp's FlowLookup and FlowSummary, with the VIPs' names added. Other
// data planes keep their flows elsewhere, and say where.

// flowTable is the data plane's conntrack, or ErrUnavailable saying where this data
// plane keeps its flows.
func (d *Daemon) flowTable() (*xdp.Dataplane, error) {
	if n, ok := d.dp.(*xdp.Node); ok { // not socklb.Node: its XDP program never runs
		return n.Dataplane(), nil
	}
	mode := d.dp.Info().Mode
	return nil, fmt.Errorf("%w for dataplane %s: %s", admin.ErrUnavailable, mode, flowsElsewhere(mode))
}

// flowsElsewhere says where a data plane other than XDP keeps its flows.
func flowsElsewhere(mode string) string {
	switch mode {
	case "nftables", "iptables":
		return "it NATs with netfilter, so the kernel's conntrack keeps the flows, 5-tuples and all: see `conntrack -L` (conntrack-tools)"
	case "ipvs":
		return "IPVS keeps the flows in its own connection table: see `ipvsadm -L -n -c` (or /proc/net/ip_vs_conn)"
	case "socket":
		return "the socket LB picks a backend once per connect() (or unconnected sendmsg) and keeps no flow table: a translated socket is connected to the backend itself; see `l4lb sockets`, and `ss -tnp` for the sockets"
	}
	return "it has no flow table l4lb can read"
}

// vipNames names the configured VIPs by key.
func (d *Daemon) vipNames() map[lb.VIPKey]string {
	out := map[lb.VIPKey]string{}
	for _, vs := range d.ctrl.Snapshot().State.VIPs {
		out[vs.VIP.Key] = vs.Name
	}
	return out
}

// FlowLookup implements admin.FlowsNode.
func (d *Daemon) FlowLookup(q admin.FlowQuery) (any, error) {
	ft, err := d.flowTable()
	if err != nil {
		return nil, err
	}
	e, err := ft.FlowLookup(xdp.Flow{Src: q.Src.Addr(), Dst: q.Dst.Addr(), Sport: q.Src.Port(), Dport: q.Dst.Port(), Proto: q.Proto})
	if errors.Is(err, xdp.ErrFlow) {
		return nil, fmt.Errorf("%w: %w", admin.ErrBadRequest, err)
	}
	if err != nil {
		return nil, err
	}
	return lookupView(e, d.vipNames()), nil
}

// FlowSummary implements admin.FlowsNode.
func (d *Daemon) FlowSummary() (any, error) {
	ft, err := d.flowTable()
	if err != nil {
		return nil, err
	}
	s, err := ft.FlowSummary()
	if err != nil {
		return nil, err
	}
	return summaryView(s, d.vipNames()), nil
}

// FlowLookupView is one flow's lookup (GET /v1/flows?proto=&src=&dst=).
type FlowLookupView struct {
	Proto string `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	// Digest is what conntrack stores for the flow (its 5-tuple's 64-bit hash).
	Digest string `json:"digest"`
	// Buckets are the flow's first and second buckets; Searched how many of them a
	// packet reads (the second only when the first does not hold the flow).
	Buckets  [2]uint32 `json:"buckets"`
	Searched int       `json:"searched"`
	// BusyWays: ways of those buckets being written as they were read.
	BusyWays int  `json:"busy_ways"`
	Tracked  bool `json:"tracked"`
	// Entry is the flow's entry (tracked only).
	Entry *FlowEntryView `json:"entry,omitempty"`
	// VIP is the VIP the destination matches; nil: none.
	VIP *FlowVIPRef `json:"vip,omitempty"`
	// Ring is the backend the VIP's ring gives the flow now (what a SYN, a miss or a
	// re-hash gets); nil: no VIP, or its ring gives none.
	Ring *FlowBackendRef `json:"ring,omitempty"`
	// Outcome is what the flow's next packet (not a SYN) gets: no_vip, untracked,
	// followed, rehash_backend_gone, rehash_not_member, rehash_udp_expired; NextPacket
	// says it in words, SYN what a SYN of this tuple gets instead (tcp).
	Outcome    string `json:"outcome"`
	NextPacket string `json:"next_packet"`
	SYN        string `json:"syn,omitempty"`
}

// FlowEntryView is a conntrack entry.
type FlowEntryView struct {
	Bucket uint32 `json:"bucket"`
	Way    int    `json:"way"`
	// State is the way's state word (hex); Marks its CT_REF ("ref": found since the
	// bucket's last second chance), CT_EST ("est": found by a later packet) and CT_BUSY
	// ("busy") bits; Generation its claim generation.
	State      string         `json:"state"`
	Marks      []string       `json:"marks"`
	Generation uint32         `json:"generation"`
	Backend    FlowBackendRef `json:"backend"`
	// Member: the VIP has the backend (vip_backends). MembersChecked is false while the
	// first pass after an upgrade refills vip_backends: every entry is followed then.
	Member         bool `json:"member"`
	MembersChecked bool `json:"members_checked"`
	// Age is how long ago a UDP entry's last packet refreshed it (to about 17 ms), in
	// AgeMS too; a TCP entry records no time. Expired: past udp_timeout.
	Age     string   `json:"age"`
	AgeMS   *float64 `json:"age_ms,omitempty"`
	Expired bool     `json:"expired"`
}

// FlowBackendRef is a backend id and, if the backends map has it, its address.
type FlowBackendRef struct {
	ID      uint32 `json:"id"`
	Address string `json:"address,omitempty"`
	Exists  bool   `json:"exists"`
}

// FlowVIPRef is a VIP.
type FlowVIPRef struct {
	Name string `json:"name,omitempty"`
	Key  string `json:"key"`
	ID   uint32 `json:"id"`
}

func backendRef(id uint32, live bool, addr netip.Addr) FlowBackendRef {
	r := FlowBackendRef{ID: id, Exists: live}
	if live {
		r.Address = addr.String()
	}
	return r
}

func (r FlowBackendRef) String() string {
	if !r.Exists {
		return fmt.Sprintf("backend %d (no such backend)", r.ID)
	}
	return fmt.Sprintf("backend %d %s", r.ID, r.Address)
}

func marks(ref, est, busy bool) []string {
	out := []string{}
	for _, m := range []struct {
		on   bool
		name string
	}{{ref, "ref"}, {est, "est"}, {busy, "busy"}} {
		if m.on {
			out = append(out, m.name)
		}
	}
	return out
}

// lookupView is the API's form of a lookup; names names the configured VIPs.
func lookupView(e xdp.FlowEntry, names map[lb.VIPKey]string) FlowLookupView {
	v := FlowLookupView{Proto: e.Flow.Proto.String(),
		Src:    netip.AddrPortFrom(e.Flow.Src, e.Flow.Sport).String(),
		Dst:    netip.AddrPortFrom(e.Flow.Dst, e.Flow.Dport).String(),
		Digest: fmt.Sprintf("%016x", e.Digest), Buckets: e.Buckets, Searched: e.Searched,
		BusyWays: e.BusyWays, Tracked: e.Tracked, Outcome: string(e.Outcome)}
	if e.VIPFound {
		v.VIP = &FlowVIPRef{Name: names[e.VIP], Key: e.VIP.String(), ID: e.VIPID}
		if e.RingBackend != 0 {
			r := backendRef(e.RingBackend, e.RingLive, e.RingAddr)
			v.Ring = &r
		}
	}
	if e.Tracked {
		en := &FlowEntryView{Bucket: e.Bucket, Way: e.Way, State: fmt.Sprintf("%#x", e.State),
			Marks: marks(e.Ref, e.Est, e.Busy), Generation: e.Generation,
			Backend: backendRef(e.BackendID, e.BackendLive, e.Backend),
			Member:  e.Member, MembersChecked: e.MembersChecked, Expired: e.Expired,
			Age: "not recorded for tcp"}
		if e.HasAge {
			ms := float64(e.Age.Microseconds()) / 1000
			en.AgeMS, en.Age = &ms, e.Age.Round(time.Millisecond).String()
		}
		v.Entry = en
	}
	v.NextPacket, v.SYN = nextPacket(e, v)
	return v
}

// nextPacket says what the flow's next packet, and a SYN of its tuple, get.
func nextPacket(e xdp.FlowEntry, v FlowLookupView) (next, syn string) {
	ring := "the ring gives no backend: dropped (drop_no_backend)"
	if v.Ring != nil && v.Ring.Exists {
		ring = "by the ring to " + v.Ring.String()
	} else if v.Ring != nil {
		ring = fmt.Sprintf("the ring gives backend %d, which does not exist: dropped (drop_no_backend)", v.Ring.ID)
	}
	if e.VIPFound && e.Flow.Proto == lb.ProtoTCP {
		syn = "a SYN never reads conntrack: it goes " + ring
		if e.Tracked {
			syn += ", and its entry replaces this one"
		}
	}
	var be FlowBackendRef
	if v.Entry != nil {
		be = v.Entry.Backend
	}
	switch e.Outcome {
	case xdp.FlowNoVIP:
		return fmt.Sprintf("no VIP has %s/%s: its packets are passed to the kernel (pass_non_vip); conntrack is not read", v.Dst, v.Proto), ""
	case xdp.FlowUntracked:
		next = "not tracked: its next packet goes " + ring + " (ct_miss), and writes an entry"
		if e.Flow.Proto == lb.ProtoTCP {
			next += " (a RST writes none)"
		}
		if e.BusyWays > 0 {
			next += fmt.Sprintf("; %d way(s) of its buckets were being written as they were read: look again", e.BusyWays)
		}
		return next, syn
	case xdp.FlowFollowed:
		next = "its next packet follows the entry to " + be.String() + " (ct_hit)"
		if !e.Member && !e.MembersChecked {
			next += "; the VIP does not have that backend, but membership is not checked until the first pass after an upgrade has refilled vip_backends"
		}
		return next, syn
	case xdp.FlowBackendGone:
		return fmt.Sprintf("the entry names backend %d, which no longer exists: its next packet goes %s (ct_rehash), and the entry is rewritten", be.ID, ring), syn
	case xdp.FlowNotMember:
		return fmt.Sprintf("the VIP no longer has %s: the entry is not followed; its next packet goes %s (ct_not_member), and the entry is rewritten", be, ring), syn
	case xdp.FlowUDPExpired:
		return fmt.Sprintf("idle for %s, past udp_timeout: its next packet goes %s (ct_udp_expired), and the entry is rewritten", v.Entry.Age, ring), syn
	}
	return string(e.Outcome), syn
}

// FlowsView is the flow table's summary (GET /v1/flows).
type FlowsView struct {
	// Entries of Capacity (the table's size), in Buckets of four ways.
	Entries     int     `json:"entries"`
	Capacity    int     `json:"capacity"`
	FillPercent float64 `json:"fill_percent"`
	Buckets     int     `json:"buckets"`
	// BucketFill[n] is how many buckets have n of their four ways in use. A new flow
	// whose two buckets are both full takes another flow's way (ct_evicted counts those
	// that held an established flow).
	BucketFill []int `json:"bucket_fill"`
	BusyWays   int   `json:"busy_ways"`
	// Established entries were found by a later packet of their flow; Referenced of
	// them since their bucket's last second chance; OnePacket never (a SYN or one
	// datagram alone: a scan or a spoofed flood looks like this).
	Established int `json:"established"`
	Referenced  int `json:"referenced"`
	OnePacket   int `json:"one_packet"`
	// UDP entries are told by their time (a TCP entry has none); UDPExpired of them are
	// idle past udp_timeout (their flow's next packet is re-hashed).
	UDP        int `json:"udp"`
	UDPExpired int `json:"udp_expired"`
	// Backends: entries per backend id named by an entry.
	Backends []FlowsBackendView `json:"backends"`
	// VIPs: entries per VIP, from their backends: an entry's digest does not say its
	// VIP, so a backend of several VIPs gives its entries to all of them (Shared).
	VIPs []FlowsVIPView `json:"vips"`
	// NoVIP counts entries naming a backend no VIP has: stale, re-hashed if their flow
	// sends again.
	NoVIP int `json:"no_vip_entries"`
	// Counters are the data plane's ct_* counters.
	Counters map[string]uint64 `json:"counters"`
	// WalkMS is how long the batch walk of the table took.
	WalkMS float64 `json:"walk_ms"`
}

// FlowsBackendView is the entries naming one backend.
type FlowsBackendView struct {
	FlowBackendRef
	Entries int `json:"entries"`
	// VIPs that have the backend; Shared: more than one, so its entries cannot be told
	// apart by VIP.
	VIPs   []string `json:"vips"`
	Shared bool     `json:"shared"`
}

// FlowsVIPView is a VIP's entries: Own (its backends no other VIP has) for sure, and up
// to Shared more (its backends other VIPs have too). Exact when Shared is 0.
type FlowsVIPView struct {
	FlowVIPRef
	Own    int  `json:"entries"`
	Shared int  `json:"shared_entries"`
	Exact  bool `json:"exact"`
}

// summaryView is the API's form of a summary; names names the configured VIPs.
func summaryView(s xdp.FlowSummary, names map[lb.VIPKey]string) FlowsView {
	v := FlowsView{Entries: s.Entries, Capacity: s.Capacity, Buckets: s.Buckets, BucketFill: s.BucketFill[:],
		BusyWays: s.BusyWays, Established: s.Established, Referenced: s.Referenced, OnePacket: s.OnePacket,
		UDP: s.Timed, UDPExpired: s.UDPExpired, Counters: s.Counters,
		Backends: []FlowsBackendView{}, VIPs: []FlowsVIPView{},
		WalkMS: float64(s.Walk.Microseconds()) / 1000}
	if s.Capacity > 0 {
		v.FillPercent = float64(int(10000*float64(s.Entries)/float64(s.Capacity))) / 100
	}
	vipName := func(id uint32) string {
		k, ok := s.VIPs[id]
		if !ok {
			return fmt.Sprintf("vip id %d", id)
		}
		if n := names[k]; n != "" {
			return n
		}
		return k.String()
	}
	for id, n := range s.ByBackend {
		addr, live := s.Backends[id]
		b := FlowsBackendView{FlowBackendRef: backendRef(id, live, addr), Entries: n, VIPs: []string{}}
		for _, vip := range s.Members[id] {
			b.VIPs = append(b.VIPs, vipName(vip))
		}
		sort.Strings(b.VIPs)
		b.Shared = len(b.VIPs) > 1
		v.Backends = append(v.Backends, b)
	}
	slices.SortFunc(v.Backends, func(a, b FlowsBackendView) int {
		return cmp.Or(cmp.Compare(b.Entries, a.Entries), cmp.Compare(a.ID, b.ID))
	})
	per, orphans := s.VIPFlows()
	v.NoVIP = orphans
	for id, k := range s.VIPs {
		f := per[id]
		v.VIPs = append(v.VIPs, FlowsVIPView{FlowVIPRef: FlowVIPRef{Name: names[k], Key: k.String(), ID: id},
			Own: f.Own, Shared: f.Shared, Exact: f.Shared == 0})
	}
	slices.SortFunc(v.VIPs, func(a, b FlowsVIPView) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Key, b.Key))
	})
	return v
}
