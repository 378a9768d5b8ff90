package daemon

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/memdp"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// modeDP is an in-memory data plane that says it is another mode.
type modeDP struct {
	*memdp.Dataplane
	mode string
}

func (m modeDP) Info() lb.Info { i := m.Dataplane.Info(); i.Mode = m.mode; return i }

// A data plane without a readable flow table says so, and where its flows are.
func TestFlowsUnavailable(t *testing.T) {
	for mode, want := range map[string]string{
		"nftables": "conntrack -L",
		"iptables": "conntrack -L",
		"ipvs":     "ipvsadm -L -n -c",
		"socket":   "l4lb sockets",
		"memory":   "no flow table",
	} {
		d := &Daemon{dp: modeDP{memdp.New(lb.DefaultRingSize, 4095), mode}}
		q, _ := admin.ParseFlow("tcp", "198.51.100.7:40000", "203.0.113.10:80")
		for name, call := range map[string]func() (any, error){
			"summary": d.FlowSummary,
			"lookup":  func() (any, error) { return d.FlowLookup(q) },
		} {
			_, err := call()
			if !errors.Is(err, admin.ErrUnavailable) || !strings.Contains(err.Error(), "dataplane "+mode) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s %s: %v, want not available, naming the mode and %q", mode, name, err, want)
			}
		}
	}
}

var (
	web    = lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.ProtoTCP}
	webAlt = lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.20"), Port: 80, Proto: lb.ProtoTCP}
	dns6   = lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::10"), Port: 53, Proto: lb.ProtoUDP}
	names  = map[lb.VIPKey]string{web: "web", webAlt: "web-alt", dns6: "dns"}
)

func TestLookupView(t *testing.T) {
	tcpFlow := xdp.Flow{Src: netip.MustParseAddr("198.51.100.7"), Dst: web.Addr, Sport: 40000, Dport: 80, Proto: lb.ProtoTCP}
	udpFlow := xdp.Flow{Src: netip.MustParseAddr("2001:db8:c::7"), Dst: dns6.Addr, Sport: 5300, Dport: 53, Proto: lb.ProtoUDP}
	be2 := netip.MustParseAddr("198.51.100.12")
	be1 := netip.MustParseAddr("198.51.100.11")
	tracked := xdp.FlowEntry{Flow: tcpFlow, Digest: 0xab, Buckets: [2]uint32{7, 9}, Searched: 1, Tracked: true,
		Bucket: 7, Way: 2, State: 0x50002 | 3<<19, BackendID: 2, Ref: true, Est: true, Generation: 3,
		BackendLive: true, Backend: be2, VIPFound: true, VIP: web, VIPID: 4, Member: true, MembersChecked: true,
		RingBackend: 1, RingLive: true, RingAddr: be1, Outcome: xdp.FlowFollowed}
	with := func(e xdp.FlowEntry, f func(*xdp.FlowEntry)) xdp.FlowEntry { f(&e); return e }
	for _, c := range []struct {
		name     string
		e        xdp.FlowEntry
		wantNext []string
		wantSYN  string
		check    func(t *testing.T, v FlowLookupView)
	}{
		{"tcp followed", tracked, []string{"follows the entry to backend 2 198.51.100.12 (ct_hit)"},
			"a SYN never reads conntrack: it goes by the ring to backend 1 198.51.100.11, and its entry replaces this one",
			func(t *testing.T, v FlowLookupView) {
				want := &FlowEntryView{Bucket: 7, Way: 2, State: "0x1d0002", Marks: []string{"ref", "est"}, Generation: 3,
					Backend: FlowBackendRef{ID: 2, Address: "198.51.100.12", Exists: true}, Member: true, MembersChecked: true,
					Age: "not recorded for tcp"}
				if diff := cmp.Diff(want, v.Entry); diff != "" {
					t.Errorf("entry (-want +got):\n%s", diff)
				}
				if v.VIP == nil || *v.VIP != (FlowVIPRef{Name: "web", Key: "203.0.113.10:80/tcp", ID: 4}) || v.Digest != "00000000000000ab" ||
					v.Src != "198.51.100.7:40000" || v.Dst != "203.0.113.10:80" {
					t.Errorf("view: %+v", v)
				}
			}},
		{"not a member", with(tracked, func(e *xdp.FlowEntry) { e.Member, e.Outcome = false, xdp.FlowNotMember }),
			[]string{"the VIP no longer has backend 2 198.51.100.12", "goes by the ring to backend 1 198.51.100.11 (ct_not_member)", "rewritten"}, "replaces this one", nil},
		{"not a member, not checked yet", with(tracked, func(e *xdp.FlowEntry) { e.Member, e.MembersChecked = false, false }),
			[]string{"follows the entry", "membership is not checked"}, "", nil},
		{"backend gone", with(tracked, func(e *xdp.FlowEntry) {
			e.BackendLive, e.Backend, e.Outcome = false, netip.Addr{}, xdp.FlowBackendGone
		}), []string{"names backend 2, which no longer exists", "(ct_rehash)"}, "", func(t *testing.T, v FlowLookupView) {
			if v.Entry.Backend != (FlowBackendRef{ID: 2}) {
				t.Errorf("backend: %+v", v.Entry.Backend)
			}
		}},
		{"untracked, ring empty", xdp.FlowEntry{Flow: tcpFlow, Searched: 2, BusyWays: 1, VIPFound: true, VIP: web, Outcome: xdp.FlowUntracked},
			[]string{"not tracked", "no backend: dropped (drop_no_backend)", "a RST writes none", "look again"},
			"a SYN never reads conntrack: it goes the ring gives no backend: dropped (drop_no_backend)", func(t *testing.T, v FlowLookupView) {
				if v.Entry != nil || v.Ring != nil || v.Tracked {
					t.Errorf("untracked view: %+v", v)
				}
			}},
		{"no vip", xdp.FlowEntry{Flow: tcpFlow, Searched: 2, Outcome: xdp.FlowNoVIP}, []string{"no VIP has 203.0.113.10:80/tcp", "pass_non_vip"}, "", func(t *testing.T, v FlowLookupView) {
			if v.SYN != "" || v.VIP != nil {
				t.Errorf("no vip: %+v", v)
			}
		}},
		{"udp expired", xdp.FlowEntry{Flow: udpFlow, Searched: 2, Tracked: true, Bucket: 9, BackendID: 3, BackendLive: true,
			Backend: netip.MustParseAddr("2001:db8:1::13"), VIPFound: true, VIP: dns6, Member: true, MembersChecked: true,
			HasAge: true, Age: 31*time.Second + 4567*time.Microsecond, Expired: true, RingBackend: 3, RingLive: true,
			RingAddr: netip.MustParseAddr("2001:db8:1::13"), Outcome: xdp.FlowUDPExpired},
			[]string{"idle for 31.005s, past udp_timeout", "(ct_udp_expired)"}, "", func(t *testing.T, v FlowLookupView) {
				if v.Entry.Age != "31.005s" || v.Entry.AgeMS == nil || *v.Entry.AgeMS != 31004.567 || !v.Entry.Expired || v.SYN != "" {
					t.Errorf("udp entry: %+v", v.Entry)
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := lookupView(c.e, names)
			for _, w := range c.wantNext {
				if !strings.Contains(v.NextPacket, w) {
					t.Errorf("next packet %q lacks %q", v.NextPacket, w)
				}
			}
			if !strings.Contains(v.SYN, c.wantSYN) || (c.wantSYN == "" && c.e.Flow.Proto == lb.ProtoUDP && v.SYN != "") {
				t.Errorf("syn %q, want %q", v.SYN, c.wantSYN)
			}
			if c.check != nil {
				c.check(t, v)
			}
		})
	}
}

// The summary attributes entries to VIPs through their backends: a backend of one VIP
// counts for it exactly, a shared one for each VIP that has it, as a range.
func TestSummaryView(t *testing.T) {
	s := xdp.FlowSummary{Entries: 10, Capacity: 4096, Buckets: 1024, BucketFill: [5]int{1016, 6, 2, 0, 0},
		Established: 8, Referenced: 7, OnePacket: 2, Timed: 3, UDPExpired: 1,
		ByBackend: map[uint32]int{1: 4, 2: 2, 3: 3, 9: 1},
		Backends:  map[uint32]netip.Addr{1: netip.MustParseAddr("198.51.100.11"), 2: netip.MustParseAddr("198.51.100.12"), 3: netip.MustParseAddr("2001:db8:1::13")},
		Members:   map[uint32][]uint32{1: {0, 1}, 2: {0}, 3: {2}},
		VIPs:      map[uint32]lb.VIPKey{0: web, 1: webAlt, 2: dns6, 5: {Addr: netip.MustParseAddr("203.0.113.30"), Port: 443, Proto: lb.ProtoTCP}},
		Counters:  map[string]uint64{"ct_evicted": 2}, Walk: 1234 * time.Microsecond}
	v := summaryView(s, names)
	wantBackends := []FlowsBackendView{
		{FlowBackendRef{1, "198.51.100.11", true}, 4, []string{"web", "web-alt"}, true},
		{FlowBackendRef{3, "2001:db8:1::13", true}, 3, []string{"dns"}, false},
		{FlowBackendRef{2, "198.51.100.12", true}, 2, []string{"web"}, false},
		{FlowBackendRef{9, "", false}, 1, []string{}, false},
	}
	wantVIPs := []FlowsVIPView{
		{FlowVIPRef{"", "203.0.113.30:443/tcp", 5}, 0, 0, true},
		{FlowVIPRef{"dns", "[2001:db8::10]:53/udp", 2}, 3, 0, true},
		{FlowVIPRef{"web", "203.0.113.10:80/tcp", 0}, 2, 4, false},
		{FlowVIPRef{"web-alt", "203.0.113.20:80/tcp", 1}, 0, 4, false},
	}
	if diff := cmp.Diff(wantBackends, v.Backends); diff != "" {
		t.Errorf("backends (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantVIPs, v.VIPs); diff != "" {
		t.Errorf("vips (-want +got):\n%s", diff)
	}
	if v.NoVIP != 1 || v.FillPercent != 0.24 || v.WalkMS != 1.234 || v.UDP != 3 || v.UDPExpired != 1 ||
		!cmp.Equal(v.BucketFill, []int{1016, 6, 2, 0, 0}) || v.Counters["ct_evicted"] != 2 {
		t.Errorf("summary: %+v", v)
	}
	// The JSON the CLI reads back.
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back FlowsView
	if err := json.Unmarshal(b, &back); err != nil || !cmp.Equal(v, back) {
		t.Errorf("json round trip: %v\n%s", err, cmp.Diff(v, back))
	}
	for _, key := range []string{`"bucket_fill":[1016,6,2,0,0]`, `"shared_entries":4`, `"no_vip_entries":1`, `"walk_ms":1.234`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("json lacks %s:\n%s", key, b)
		}
	}
}
