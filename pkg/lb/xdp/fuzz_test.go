package xdp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

// fuzzDeny is the deny list of the fuzz rig.
var fuzzDeny = []netip.Prefix{netip.MustParsePrefix("203.0.113.96/29"), netip.MustParsePrefix("2001:db8:bad::/48")}

func fuzzDenied(a netip.Addr) bool {
	for _, p := range fuzzDeny {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// tcpFlagsValid: the flag sets a connection carries (PSH, ECE, CWR aside), as Linux
// conntrack judges them.
func tcpFlagsValid(flags byte) bool {
	switch flags & 0x3f &^ 0x08 {
	case 0x02, 0x22, 0x12, 0x04, 0x14, 0x11, 0x31, 0x10, 0x30:
		return true
	}
	return false
}

// oracleFacts are what the oracle found besides the flow.
type oracleFacts struct {
	denied bool // the IP header was read and its source is in the deny list
	df     bool // IPv4 DF set, or IPv6
	icmp   bool // an ICMP too-big about a flow
}

// oracle is an independent reading of the forwarding rule (docs/architecture.md): it says
// whether a frame is a well-formed packet for a VIP, and which flow it belongs to. For an
// ICMP too-big it returns the quoted flow reversed.
func oracle(in []byte) (f Flow, l3len int, ok bool) {
	f, l3len, ok, _ = oracleWithFacts(in)
	return f, l3len, ok
}

func oracleWithFacts(in []byte) (f Flow, l3len int, ok bool, facts oracleFacts) {
	f, l3len, ok = oracleFlow(in, &facts)
	return f, l3len, ok, facts
}

func oracleFlow(in []byte, facts *oracleFacts) (f Flow, l3len int, ok bool) {
	if len(in) < 14 {
		return f, 0, false
	}
	et := binary.BigEndian.Uint16(in[12:])
	off := 14
	if et == unix.ETH_P_8021Q || et == unix.ETH_P_8021AD {
		if len(in) < 18 {
			return f, 0, false
		}
		et = binary.BigEndian.Uint16(in[16:])
		off = 18
	}
	ip := in[off:]
	var l4 []byte
	var proto byte
	switch et {
	case 0x0800:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return f, 0, false
		}
		ihl := int(ip[0]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < 20 || tot < ihl || tot > len(ip) || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return f, 0, false
		}
		f.Src = netip.AddrFrom4([4]byte(ip[12:16]))
		f.Dst = netip.AddrFrom4([4]byte(ip[16:20]))
		if fuzzDenied(f.Src) {
			facts.denied = true
			return f, 0, false
		}
		facts.df = ip[6]&0x40 != 0
		proto, l4, l3len = ip[9], ip[ihl:tot], tot
	case 0x86dd:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return f, 0, false
		}
		tot := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		if tot > len(ip) {
			return f, 0, false
		}
		f.Src = netip.AddrFrom16([16]byte(ip[8:24]))
		f.Dst = netip.AddrFrom16([16]byte(ip[24:40]))
		if fuzzDenied(f.Src) {
			facts.denied = true
			return f, 0, false
		}
		facts.df = true
		nh, o := ip[6], 40
		for i := 0; i < 4 && (nh == 0 || nh == 43 || nh == 60); i++ {
			if o+2 > tot {
				return f, 0, false
			}
			nh, o = ip[o], o+(int(ip[o+1])+1)*8
		}
		if nh == 0 || nh == 43 || nh == 60 || nh == 44 || o > tot {
			return f, 0, false
		}
		proto, l4, l3len = nh, ip[o:tot], tot
	default:
		return f, 0, false
	}
	switch proto {
	case 6, 17:
		if (proto == 6 && len(l4) < 20) || len(l4) < 8 {
			return f, 0, false
		}
		if proto == 6 && !tcpFlagsValid(l4[13]) {
			return f, 0, false
		}
		if proto == 17 && int(binary.BigEndian.Uint16(l4[4:])) != len(l4) {
			return f, 0, false
		}
		f.Sport, f.Dport, f.Proto = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:]), lb.Proto(proto)
		return f, l3len, true
	case 1, 58:
		var q []byte
		var qsrc, qdst netip.Addr
		if proto == 1 {
			if len(l4) < 8 || l4[0] != 3 || l4[1] != 4 || len(l4) < 8+20 || l4[8]>>4 != 4 {
				return f, 0, false
			}
			qihl := int(l4[8]&0x0f) * 4
			if qihl < 20 || len(l4) < 8+qihl+4 {
				return f, 0, false
			}
			proto = l4[8+9]
			qsrc, qdst = netip.AddrFrom4([4]byte(l4[8+12:8+16])), netip.AddrFrom4([4]byte(l4[8+16:8+20]))
			q = l4[8+qihl:]
		} else {
			if len(l4) < 8+40+4 || l4[0] != 2 || l4[8]>>4 != 6 {
				return f, 0, false
			}
			proto = l4[8+6]
			qsrc, qdst = netip.AddrFrom16([16]byte(l4[8+8:8+24])), netip.AddrFrom16([16]byte(l4[8+24:8+40]))
			q = l4[8+40:]
		}
		// Ours only when addressed to the VIP that sent the quoted packet.
		if proto != 6 && proto != 17 || qsrc != f.Dst {
			return f, 0, false
		}
		facts.icmp = true
		return Flow{Src: qdst, Dst: qsrc, Sport: binary.BigEndian.Uint16(q[2:]), Dport: binary.BigEndian.Uint16(q), Proto: lb.Proto(proto)}, l3len, true
	}
	return f, 0, false
}

func FuzzXDP(f *testing.F) {
	r := newRig(f, Options{})
	vips := []lb.VIP{
		{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")},
		{Key: key("203.0.113.10", 53, udp), Backends: backends(1, "198.51.100.11", "198.51.100.12")},
		{Key: key("203.0.113.20", 0, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12")},
		{Key: key("2001:db8:f::10", 80, tcp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")},
		{Key: key("2001:db8:f::10", 53, udp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")},
		{Key: key("203.0.113.30", 80, tcp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")},
	}
	for _, v := range vips {
		r.setVIP(v)
	}
	if err := r.d.DenyAdd(fuzzDeny); err != nil {
		f.Fatal(err)
	}
	match := func(fl Flow) (lb.VIP, bool) {
		if v, ok := r.vips[lb.VIPKey{Addr: fl.Dst, Port: fl.Dport, Proto: fl.Proto}]; ok {
			return v, true
		}
		v, ok := r.vips[lb.VIPKey{Addr: fl.Dst, Port: 0, Proto: fl.Proto}]
		return v, ok
	}

	seeds := []pkt{
		{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"},
		{src: cli4, dst: "203.0.113.10", proto: udp, sport: 40000, dport: 53, payload: 20},
		{src: cli4, dst: "203.0.113.20", proto: tcp, sport: 1, dport: 9, flags: "A", vlan: 5},
		{src: cli6, dst: "2001:db8:f::10", proto: tcp, sport: 40000, dport: 80, flags: "S", hopByHop: 1},
		{src: cli4, dst: "203.0.113.30", proto: tcp, sport: 40000, dport: 80, flags: "S", ip4opts: true},
		{src: cli4, dst: "198.51.100.99", proto: udp, sport: 1, dport: 2},
	}
	for _, s := range seeds {
		f.Add(s.build(f))
	}
	f.Add(pkt{src: "203.0.113.99", dst: "203.0.113.10", proto: tcp, sport: 1, dport: 80, flags: "S"}.build(f))
	f.Add(pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 1, dport: 80, flags: "A", payload: 1500, df: true}.build(f))
	f.Add(pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 1, dport: 80, flags: "SF"}.build(f))
	f.Add(icmpTooBig(f, seeds[0].flow(), router4))
	f.Add(icmpTooBig(f, seeds[3].flow(), router6))

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 3000 {
			t.Skip("BPF_PROG_TEST_RUN takes 14 bytes to a page")
		}
		in = append([]byte(nil), in...)
		verdict, out := runProg(t, r.d.Program(), in)
		fl, l3len, wellFormed, facts := oracleWithFacts(in)
		v, isVIP := match(fl)
		if facts.denied && verdict != xdpDrop {
			t.Fatalf("packet from denied source %s got verdict %d", fl.Src, verdict)
		}
		overhead := 40
		if isVIP && v.Backends[0].Addr.Is4() {
			overhead = 20
		}
		tooBig := l3len+overhead > int(r.d.Options().MTU)
		switch verdict {
		case xdpPass:
			if !bytes.Equal(in, out) {
				t.Fatalf("passed frame was modified:\n%s", frameDiff(in, out))
			}
		case xdpDrop:
		case xdpTx:
			if !wellFormed || !isVIP {
				t.Fatalf("transmitted a frame that is not a well-formed packet to a vip (well-formed %v, vip %v):\n%x", wellFormed, isVIP, in)
			}
			if tooBig {
				// Too big once encapsulated: only an ICMP answer to the client may leave.
				if facts.icmp || !facts.df {
					t.Fatalf("transmitted a too-big packet that must be dropped:\n%x", in)
				}
				if want := tooBigReply(t, in, r.d.Options().MTU-uint32(overhead)); !bytes.Equal(want, out) {
					t.Fatalf("too-big answer differs:\n%s", frameDiff(want, out))
				}
				return
			}
			// The backend is conntrack's choice, which earlier inputs may have made: it
			// must be one of the VIP's, and the frame must be exactly its encapsulation.
			var be netip.Addr
			for _, b := range v.Backends {
				want := encapsulated(t, in, b.Addr, FlowHash(fl, v.Flags), macNextHop)
				if bytes.Equal(want, out) {
					be = b.Addr
				}
			}
			if !be.IsValid() {
				t.Fatalf("transmitted frame is no valid encapsulation of the input to a backend of %s:\nin  %x\nout %x\n%s", v.Key, in, out, frameDiff(in, out))
			}
		default:
			t.Fatalf("unexpected verdict %d", verdict)
		}
		// The converse: a well-formed packet to a VIP that fits the MTU once encapsulated
		// is transmitted.
		if wellFormed && isVIP && verdict != xdpTx {
			if !tooBig {
				t.Fatalf("well-formed packet to %s got verdict %d:\n%x", v.Key, verdict, in)
			}
		}
	})
}
