package daemon

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/memdp"
	"github.com/l4lb/l4lb/pkg/lb/nft"
)

// fakeNFT is an in-memory data plane that traces like nftables, with a canned answer.
type fakeNFT struct {
	modeDP
	tr  nft.Trace
	got nft.Packet
}

func (f *fakeNFT) Trace(p nft.Packet) (nft.Trace, error) {
	f.got = p
	if p.Proto != lb.ProtoTCP && p.Proto != lb.ProtoUDP {
		return nft.Trace{}, nft.ErrPacket
	}
	return f.tr, nil
}

// iptables and IPVS answer 501, naming what to look at instead.
func TestTraceUnavailable(t *testing.T) {
	for mode, want := range map[string][]string{
		"iptables": {"at random", "iptables -t nat -L L4LB-V<id> -n -v", "L4LB-PREROUTING", "conntrack -L"},
		"ipvs":     {"mh scheduler", "ipvsadm -L -n", "ipvsadm -L -n -c"},
		"socket":   {"l4lb status"},
	} {
		d := &Daemon{dp: modeDP{memdp.New(lb.DefaultRingSize, 4095), mode}}
		q, _ := admin.ParseTrace("tcp", "198.51.100.7:40000", "203.0.113.10:80", "S", "")
		_, err := d.Trace(q)
		if !errors.Is(err, admin.ErrUnavailable) || !strings.Contains(err.Error(), "dataplane "+mode) {
			t.Errorf("%s: %v, want not available naming the mode", mode, err)
			continue
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not say %q", mode, err, w)
			}
		}
	}
}

// An nftables node's trace goes to its data plane with the packet as asked.
func TestTraceNFTDispatch(t *testing.T) {
	be := netip.MustParseAddr("198.51.100.12")
	f := &fakeNFT{modeDP: modeDP{memdp.New(lb.DefaultRingSize, 4095), "nftables"},
		tr: nft.Trace{Matched: true, VIP: web, Ring: "ring0_1", RingSize: 65537, Hash: 0x5e2a91c4, Slot: 23999,
			Backend: be, BackendID: 2, Verdict: nft.VerdictDNAT, Masquerade: "m", Conntrack: nft.CTRules, CTWhy: "no entry"}}
	d := &Daemon{dp: f}
	d.ctrl = lb.NewController(slog.New(slog.DiscardHandler), f, 4095, nil, nil)
	q, _ := admin.ParseTrace("tcp", "198.51.100.7:40000", "203.0.113.10:80", "S", "")
	out, err := d.Trace(q)
	if err != nil {
		t.Fatal(err)
	}
	v := out.(TraceView)
	if v.Verdict != "dnat" || v.Backend != "198.51.100.12 (id 2)" || v.VIPKey != web.String() {
		t.Errorf("view: %+v", v)
	}
	if p := f.got; p.Src != q.Src.Addr() || p.Dst != q.Dst.Addr() || p.Sport != 40000 || p.Dport != 80 || p.Proto != lb.ProtoTCP || p.Flags != "S" {
		t.Errorf("traced %+v for %s", p, q)
	}
}

func TestNFTTraceView(t *testing.T) {
	be := netip.MustParseAddr("198.51.100.12")
	q, _ := admin.ParseTrace("tcp", "198.51.100.7:40000", "203.0.113.10:80", "S", "")
	ack, _ := admin.ParseTrace("tcp", "198.51.100.7:40000", "203.0.113.10:80", "", "1400")
	dnat := nft.Trace{Matched: true, VIP: web, Ring: "ring0_1", RingSize: 65537, Hash: 0x5e2a91c4, Slot: 23999,
		Backend: be, BackendID: 2, Verdict: nft.VerdictDNAT, Rule: `vip_dnat "l4lb vip ..." handle 11`,
		Masquerade: `backend_snat "l4lb backend 2 198.51.100.12" handle 6`, Conntrack: nft.CTRules,
		CTWhy: "no conntrack entry: the SYN starts one, and the rules decide"}
	with := func(tr nft.Trace, f func(*nft.Trace)) nft.Trace { f(&tr); return tr }
	entry := nft.CTEntry{TCPState: "ESTABLISHED", DNAT: true, SNAT: true, TimeoutSeconds: 431999,
		ReplySrc: netip.MustParseAddrPort("198.51.100.11:80"), ReplyDst: netip.MustParseAddrPort("198.51.100.40:40000")}
	for _, c := range []struct {
		name string
		q    admin.TraceQuery
		tr   nft.Trace
		want TraceView
	}{
		{"syn to the ring", q, dnat, TraceView{
			Verdict: "dnat", Reason: "new_flow", VIP: "web", VIPKey: web.String(), Hash: 0x5e2a91c4,
			Ring:      "slot 23999 of 65537 (ring0_1) -> backend 198.51.100.12 (id 2)",
			Backend:   "198.51.100.12 (id 2)",
			Encap:     "none: DNAT to 198.51.100.12:80 (the VIP's port kept), then SNAT (masquerade) to this node's address on the route to the backend",
			Conntrack: "no conntrack entry: the SYN starts one, and the rules decide",
			Writes:    "a kernel conntrack entry holding the flow's NAT",
			Rule:      `vip_dnat "l4lb vip ..." handle 11; backend_snat "l4lb backend 2 198.51.100.12" handle 6`,
			Summary:   "DNAT to 198.51.100.12 (id 2) for VIP web (ring slot 23999), masqueraded to this node's address",
		}},
		{"ack follows an entry to another backend", ack, with(dnat, func(tr *nft.Trace) {
			tr.Conntrack, tr.CTWhy, tr.EntryFound, tr.Entry = nft.CTEntryFollowed, "the flow has a conntrack entry: the packet follows it", true, entry
		}), TraceView{
			Verdict: "dnat", Reason: "conntrack_entry", VIP: "web", VIPKey: web.String(), Hash: 0x5e2a91c4,
			Ring:      "slot 23999 of 65537 (ring0_1) -> backend 198.51.100.12 (id 2)",
			Backend:   "198.51.100.11",
			Encap:     "none: as the entry translates: destination to 198.51.100.11:80, source to 198.51.100.40:40000",
			Conntrack: "entry ESTABLISHED, DNAT to 198.51.100.11:80, SNAT to 198.51.100.40:40000, expires in 431999 s; the flow has a conntrack entry: the packet follows it",
			Writes:    "nothing new: the entry's state and timeout are refreshed",
			MTU:       "not checked: NAT adds no header (the route's MTU applies, as to any forwarded packet)",
			Summary:   "follows its conntrack entry: DNAT to 198.51.100.11 for VIP web (a new flow would get 198.51.100.12 (id 2))",
		}},
		{"no backend", q, nft.Trace{Matched: true, VIP: web, Ring: "ring0_1", RingSize: 65537, Hash: 7, Slot: 0,
			Verdict: nft.VerdictDrop, Rule: `vip_dnat "l4lb nobackend ..." handle 12`, Conntrack: nft.CTRules, CTWhy: "no entry"}, TraceView{
			Verdict: "drop", Reason: "drop_no_backend", VIP: "web", VIPKey: web.String(), Hash: 7,
			Ring: "slot 0 of 65537 (ring0_1): names no backend", Conntrack: "no entry",
			Rule:    `vip_dnat "l4lb nobackend ..." handle 12`,
			Summary: "dropped: the flow's slot of VIP web names no backend (every backend drained or down)",
		}},
		{"another port of a vip's address", q, nft.Trace{Verdict: nft.VerdictPass, Others: []lb.VIPKey{webAlt}, Conntrack: nft.CTRules, CTWhy: "no entry"}, TraceView{
			Verdict: "pass", Reason: "not_vip",
			NoVIP:     "the address has VIPs (203.0.113.20:80/tcp), none for this protocol and port: l4lb's rules leave the packet alone (the kernel routes or delivers it as addressed)",
			Conntrack: "no entry", Writes: "a kernel conntrack entry without NAT (unless something else drops the packet)",
			Summary: "passed: the address has VIPs (203.0.113.20:80/tcp), none for this protocol and port: l4lb's rules leave the packet alone (the kernel routes or delivers it as addressed)",
		}},
		{"invalid to conntrack, lookup failed, rule altered", q, with(dnat, func(tr *nft.Trace) {
			tr.Conntrack, tr.CTWhy, tr.CTErr, tr.Altered = nft.CTInvalid, "conntrack calls it invalid", "open ctnetlink: denied", []string{"vip_dnat x"}
		}), TraceView{
			Verdict: "pass", Reason: "conntrack_invalid", VIP: "web", VIPKey: web.String(), Hash: 0x5e2a91c4,
			Ring:      "slot 23999 of 65537 (ring0_1) -> backend 198.51.100.12 (id 2)",
			Conntrack: "not looked up (open ctnetlink: denied): an entry of the flow would take precedence over the rules; without one, conntrack calls it invalid",
			Warning:   "rules differ from what l4lb writes (changed by someone else?), so the slot is not vouched for: vip_dnat x",
			Summary:   "not translated: conntrack calls the packet invalid, so the NAT rules are not read and it goes on as addressed",
		}},
	} {
		got := nftTraceView(c.q, c.tr, names)
		want := c.want
		want.Packet, want.Prefilter = c.q.String(), "none: the nftables data plane has no prefilter"
		if got != want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, want)
		}
	}
}
