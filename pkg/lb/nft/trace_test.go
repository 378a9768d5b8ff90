package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// TestPrivilegedNFTTrace: for many real flows through the rules in a namespace, IPv4 and
// IPv6, TCP and UDP, with and without the source port in the hash, for one port and for
// any port, the backend the trace reads from the live ruleset is the backend the flow
// reaches; the conntrack entry the flow leaves is found and names that backend; a VIP
// without a backend is a drop, and a packet for no VIP passes.
func TestPrivilegedNFTTrace(t *testing.T) {
	b := newBed(t)
	anyPort := lb.VIPKey{Addr: netip.MustParseAddr("198.51.100.20"), Port: 0, Proto: lb.ProtoUDP}
	keys := []lb.VIPKey{
		{Addr: vip4, Port: 80, Proto: lb.ProtoTCP},
		{Addr: vip4, Port: 53, Proto: lb.ProtoUDP},
		{Addr: vip6, Port: 80, Proto: lb.ProtoTCP},
		{Addr: vip6, Port: 53, Proto: lb.ProtoUDP},
		anyPort,
	}
	vips := map[lb.VIPKey]lb.VIP{}
	for i, k := range keys {
		var flags lb.VIPFlags
		if i == 1 {
			flags = lb.FlagHashNoSourcePort
		}
		vips[k] = b.vip(k, flags)
		if err := b.d.SetVIP(vips[k]); err != nil {
			t.Fatal(err)
		}
	}
	empty := lb.VIPKey{Addr: vip4, Port: 8080, Proto: lb.ProtoTCP}
	if err := b.d.SetVIP(b.vip(empty, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	// Clients on eight addresses of each family, so the addresses are hashed too, and a
	// VIP that hashes no source port still spreads its flows over slots.
	var clients4, clients6 []netip.Addr
	for i := range 8 {
		a4 := netip.AddrFrom4([4]byte{192, 0, 2, byte(11 + i)})
		a6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:c::%x", 0x11+i))
		b.Client.Run(t, "ip", "addr", "add", a4.String()+"/24", "dev", "c0")
		b.Client.Run(t, "ip", "addr", "add", a6.String()+"/64", "dev", "c0", "nodad")
		clients4, clients6 = append(clients4, a4), append(clients6, a6)
	}
	// Each address reaches the LB node before any flow uses it: a neighbor solicitation
	// for an address added a moment ago can go unanswered.
	for _, a := range append(slices.Clone(clients4), clients6...) {
		lbAddr := "192.0.2.2"
		if a.Is6() {
			lbAddr = "2001:db8:c::2"
		}
		for try := 0; ; try++ {
			if _, err := b.Client.Output("ping", "-c1", "-W1", "-I", a.String(), lbAddr); err == nil {
				break
			} else if try == 5 {
				t.Fatalf("client address %s does not reach the lb node: %v", a, err)
			}
		}
	}
	client := func(k lb.VIPKey, sport uint16) netip.Addr {
		if k.Addr.Is6() {
			return clients6[int(sport)%8]
		}
		return clients4[int(sport)%8]
	}
	pkt := func(k lb.VIPKey, sport uint16, flags string) Packet {
		dport := k.Port
		if dport == 0 {
			dport = 53 // the backends answer on 53
		}
		if k.Proto == lb.ProtoUDP {
			flags = ""
		}
		return Packet{Flow: xdp.Flow{Src: client(k, sport), Dst: k.Addr, Sport: sport, Dport: dport, Proto: k.Proto}, Flags: flags}
	}
	trace := func(t *testing.T, p Packet) Trace {
		t.Helper()
		tr, err := b.d.Trace(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(tr.Altered) > 0 || tr.CTErr != "" {
			t.Fatalf("trace of %+v: altered rules %q, conntrack error %q", p, tr.Altered, tr.CTErr)
		}
		return tr
	}

	for _, k := range keys {
		t.Run(k.String(), func(t *testing.T) {
			seen := map[string]int{}
			for i := range 40 {
				sport := uint16(21000 + 13*i)
				p := pkt(k, sport, "S")
				tr := trace(t, p)
				if !tr.Matched || tr.VIP != k || tr.Verdict != VerdictDNAT || !tr.Backend.IsValid() || tr.Conntrack != CTRules || tr.EntryFound {
					t.Fatalf("trace of a new flow from port %d: %+v", sport, tr)
				}
				if tr.RingSize != testRing || tr.Masquerade == "" || tr.BackendID == 0 {
					t.Fatalf("trace from port %d: ring size %d, masquerade %q, backend id %d", sport, tr.RingSize, tr.Masquerade, tr.BackendID)
				}
				// The real flow. For the any-port VIP, ask on port 53.
				ask := k
				ask.Port = p.Dport
				got, err := b.AskFrom(ask, p.Src, sport)
				if err != nil {
					t.Fatalf("flow from port %d: %v", sport, err)
				}
				name := b.CheckAnswer(t, got)
				if want := b.nameOf(tr.Backend); name != want {
					t.Errorf("flow from port %d reached %s; the trace said slot %d of %d: %s (%s)", sport, name, tr.Slot, tr.RingSize, tr.Backend, want)
				}
				seen[name]++
				// The flow's next packet follows the entry the flow left, which names
				// the same backend.
				next := trace(t, pkt(k, sport, "A"))
				if !next.EntryFound || next.Conntrack != CTEntryFollowed || !next.Entry.DNAT || !next.Entry.SNAT ||
					next.Entry.ReplySrc.Addr() != tr.Backend || next.Entry.ReplySrc.Port() != p.Dport {
					t.Fatalf("trace of the flow's next packet: %+v", next)
				}
				if k.Proto == lb.ProtoTCP {
					// The connection is closed: a SYN of the same tuple reopens it.
					again := trace(t, p)
					if again.Conntrack != CTRules || again.Backend != tr.Backend || !again.EntryFound {
						t.Errorf("trace of a SYN after the connection closed (entry %+v): %s, %s", again.Entry, again.Conntrack, again.CTWhy)
					}
				}
			}
			if len(seen) != 2 {
				t.Errorf("40 flows reached %v, want both backends", seen)
			}
		})
	}

	t.Run("no backend", func(t *testing.T) {
		tr := trace(t, pkt(empty, 31000, "S"))
		if !tr.Matched || tr.VIP != empty || tr.Verdict != VerdictDrop || tr.Backend.IsValid() || !strings.Contains(tr.Rule, "l4lb nobackend") {
			t.Fatalf("trace: %+v", tr)
		}
		before, _ := b.d.Counters()
		if got, err := b.AskFrom(empty, client(empty, 31000), 31000); err == nil {
			t.Fatalf("vip without a backend answered %q", got)
		}
		after, _ := b.d.Counters()
		if after.Global[CounterNoBackend] <= before.Global[CounterNoBackend] {
			t.Errorf("%s did not count the refused flow", CounterNoBackend)
		}
	})

	t.Run("no vip", func(t *testing.T) {
		tr := trace(t, Packet{Flow: xdp.Flow{Src: client(keys[0], 1000), Dst: netip.MustParseAddr("198.51.100.99"), Sport: 1000, Dport: 80, Proto: lb.ProtoTCP}, Flags: "S"})
		if tr.Matched || tr.Verdict != VerdictPass || len(tr.Others) != 0 {
			t.Fatalf("trace for no vip's address: %+v", tr)
		}
		tr = trace(t, Packet{Flow: xdp.Flow{Src: client(keys[0], 1000), Dst: vip4, Sport: 1000, Dport: 80, Proto: lb.ProtoUDP}})
		if tr.Matched || tr.Verdict != VerdictPass || !slices.Contains(tr.Others, keys[0]) || !slices.Contains(tr.Others, keys[1]) {
			t.Fatalf("trace for another port and protocol of a vip's address: %+v", tr)
		}
	})

	t.Run("invalid to conntrack", func(t *testing.T) {
		tr := trace(t, pkt(keys[0], 32000, "F"))
		if tr.Conntrack != CTInvalid || tr.Verdict != VerdictDNAT {
			t.Fatalf("trace of a lone FIN: %+v", tr)
		}
	})
}

// asDumped is a rule's expressions as the kernel dumps them back: a 32-bit register that
// starts a 16-byte one under the 16-byte one's number, a NAT range's end filled in,
// counters counting, the set's id its own.
func asDumped(es []expr.Any) []expr.Any {
	dump := func(r uint32) uint32 {
		if r >= 8 && (r-8)%4 == 0 {
			return 1 + (r-8)/4
		}
		return r
	}
	var out []expr.Any
	for _, e := range es {
		switch e := e.(type) {
		case *expr.Payload:
			c := *e
			c.DestRegister = dump(c.DestRegister)
			out = append(out, &c)
		case *expr.Bitwise:
			c := *e
			c.SourceRegister, c.DestRegister = dump(c.SourceRegister), dump(c.DestRegister)
			out = append(out, &c)
		case *expr.Hash:
			c := *e
			c.SourceRegister, c.DestRegister = dump(c.SourceRegister), dump(c.DestRegister)
			out = append(out, &c)
		case *expr.Lookup:
			c := *e
			c.SourceRegister, c.SetID = dump(c.SourceRegister), 77
			out = append(out, &c)
		case *expr.NAT:
			c := *e
			c.RegAddrMax = c.RegAddrMin
			out = append(out, &c)
		case *expr.Counter:
			out = append(out, &expr.Counter{Packets: 5, Bytes: 300})
		case *expr.Cmp:
			c := *e
			out = append(out, &c)
		default:
			out = append(out, e)
		}
	}
	return out
}

// TestSameExprs: a rule read back as the kernel dumps it is what l4lb writes; one whose
// hash, match or verdict differs is not.
func TestSameExprs(t *testing.T) {
	tb := table()
	for _, tag := range []vipTag{
		{Kind: "vip", Key: lb.VIPKey{Addr: vip4, Port: 80, Proto: lb.ProtoTCP}, Ring: "ring0_0"},
		{Kind: "vip", Key: lb.VIPKey{Addr: vip6, Proto: lb.ProtoUDP}, Flags: lb.FlagHashNoSourcePort, Ring: "ring1_2"},
	} {
		_, dnat, drop := vipRules(tb, tag, ringSet(tb, tag.Ring, tag.Key.Addr.Is6()), 65537)
		if !sameExprs(asDumped(dnat.Exprs), dnat.Exprs) || !sameExprs(asDumped(drop.Exprs), drop.Exprs) {
			t.Errorf("%s: the dumped rules differ from the written ones", tag.Key)
		}
		for name, change := range map[string]func(e expr.Any){
			"seed": func(e expr.Any) {
				if h, ok := e.(*expr.Hash); ok {
					h.Seed++
				}
			},
			"hash length": func(e expr.Any) {
				if h, ok := e.(*expr.Hash); ok {
					h.Length -= 4
				}
			},
			"address": func(e expr.Any) {
				if c, ok := e.(*expr.Cmp); ok && len(c.Data) >= 4 {
					c.Data = slices.Clone(c.Data)
					c.Data[0]++
				}
			},
		} {
			got := asDumped(dnat.Exprs)
			for _, e := range got {
				change(e)
			}
			if sameExprs(got, dnat.Exprs) {
				t.Errorf("%s: a rule with another %s reads as l4lb's", tag.Key, name)
			}
		}
		if sameExprs(asDumped(dnat.Exprs)[:len(dnat.Exprs)-1], dnat.Exprs) {
			t.Errorf("%s: a rule without its dnat reads as l4lb's", tag.Key)
		}
	}
}

// TestConntrackDecides: which packets the NAT rules decide, which follow an entry, which
// conntrack calls invalid (nf_conntrack_proto_tcp.c's tables from no entry).
func TestConntrackDecides(t *testing.T) {
	tcp := func(flags string) Packet { return Packet{Flow: xdp.Flow{Proto: lb.ProtoTCP}, Flags: flags} }
	udp := Packet{Flow: xdp.Flow{Proto: lb.ProtoUDP}}
	open := CTEntry{TCPState: "ESTABLISHED", DNAT: true}
	closed := CTEntry{TCPState: "TIME_WAIT", DNAT: true}
	for _, c := range []struct {
		name  string
		p     Packet
		found bool
		e     CTEntry
		loose int
		want  Conntrack
	}{
		{"udp new", udp, false, CTEntry{}, -1, CTRules},
		{"udp entry", udp, true, CTEntry{DNAT: true}, -1, CTEntryFollowed},
		{"syn new", tcp("S"), false, CTEntry{}, 1, CTRules},
		{"syn psh new", tcp("SP"), false, CTEntry{}, 1, CTRules},
		{"syn open entry", tcp("S"), true, open, 1, CTEntryFollowed},
		{"syn closed entry", tcp("S"), true, closed, 1, CTRules},
		{"ack entry", tcp("A"), true, open, 1, CTEntryFollowed},
		{"ack psh entry", tcp("AP"), true, open, 0, CTEntryFollowed},
		{"ack new loose", tcp("A"), false, CTEntry{}, 1, CTRules},
		{"ack new loose unknown", tcp("PA"), false, CTEntry{}, -1, CTRules},
		{"ack new strict", tcp("A"), false, CTEntry{}, 0, CTInvalid},
		{"syn ack new", tcp("SA"), false, CTEntry{}, 1, CTInvalid},
		{"fin ack new", tcp("FA"), false, CTEntry{}, 1, CTInvalid},
		{"rst new", tcp("R"), false, CTEntry{}, 1, CTInvalid},
		{"fin alone", tcp("F"), true, open, 1, CTInvalid},
		{"fin ack entry", tcp("FA"), true, open, 1, CTEntryFollowed},
		{"syn ack on an open entry", tcp("SA"), true, open, 1, CTInvalid},
		{"ack on syn sent", tcp("A"), true, CTEntry{TCPState: "SYN_SENT"}, 1, CTInvalid},
		{"syn on syn sent", tcp("S"), true, CTEntry{TCPState: "SYN_SENT"}, 1, CTEntryFollowed},
		{"rst on an open entry", tcp("RA"), true, open, 1, CTEntryFollowed},
		{"syn fin", tcp("SF"), false, CTEntry{}, 1, CTInvalid},
		{"no flags", tcp(""), false, CTEntry{}, 1, CTInvalid},
	} {
		got, why := conntrackDecides(c.p, c.found, c.e, c.loose)
		if got != c.want || why == "" {
			t.Errorf("%s: %s (%q), want %s", c.name, got, why, c.want)
		}
	}
}

// TestParseCT reads an entry as ctnetlink answers a lookup.
func TestParseCT(t *testing.T) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	tuple := func(src, dst netip.AddrPort) func(*netlink.AttributeEncoder) error {
		return func(t *netlink.AttributeEncoder) error {
			t.Nested(ctaTupleIP, func(ip *netlink.AttributeEncoder) error {
				ip.Bytes(ctaIPv6Src, src.Addr().AsSlice())
				ip.Bytes(ctaIPv6Dst, dst.Addr().AsSlice())
				return nil
			})
			t.Nested(ctaTupleProto, func(p *netlink.AttributeEncoder) error {
				p.Uint8(ctaProtoNum, 6)
				p.Uint16(ctaProtoSrcPort, src.Port())
				p.Uint16(ctaProtoDstPort, dst.Port())
				return nil
			})
			return nil
		}
	}
	client, vip := netip.MustParseAddrPort("[2001:db8:c::1]:40000"), netip.MustParseAddrPort("[2001:db8:f::10]:80")
	be, lbAddr := netip.MustParseAddrPort("[2001:db8:b1::2]:80"), netip.MustParseAddrPort("[2001:db8:b1::1]:40000")
	ae.Nested(ctaTupleOrig, tuple(client, vip))
	ae.Nested(ctaTupleReply, tuple(be, lbAddr))
	ae.Uint32(ctaStatus, ipsDstNAT|ipsSrcNAT|0x8)
	ae.Uint32(ctaTimeout, 118)
	ae.Nested(ctaProtoinfo, func(pi *netlink.AttributeEncoder) error {
		pi.Nested(ctaProtoinfoTCP, func(tcp *netlink.AttributeEncoder) error {
			tcp.Uint8(ctaProtoinfoTCPState, 7)
			return nil
		})
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseCT(b, lb.ProtoTCP)
	if err != nil {
		t.Fatal(err)
	}
	want := CTEntry{TCPState: "TIME_WAIT", Status: ipsDstNAT | ipsSrcNAT | 0x8, DNAT: true, SNAT: true, ReplySrc: be, ReplyDst: lbAddr, TimeoutSeconds: 118}
	if got != want {
		t.Errorf("entry %+v, want %+v", got, want)
	}
}
