package xdp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/l4lb/l4lb/pkg/lb"
)

// oracle is an independent reading of the forwarding rule (docs/architecture.md): it says
// whether a frame is a well-formed packet for a VIP, and which flow it belongs to. For an
// ICMP too-big it returns the quoted flow reversed.
func oracle(in []byte) (f Flow, l3len int, ok bool) {
	if len(in) < 14 {
		return f, 0, false
	}
	et := binary.BigEndian.Uint16(in[12:])
	off := 14
	if et == 0x8100 || et == 0x88a8 {
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
		if proto != 6 && proto != 17 {
			return f, 0, false
		}
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
	f.Add(icmpTooBig(f, seeds[0].flow(), router4))
	f.Add(icmpTooBig(f, seeds[3].flow(), router6))

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 3000 {
			t.Skip("BPF_PROG_TEST_RUN takes 14 bytes to a page")
		}
		in = append([]byte(nil), in...)
		verdict, out := runProg(t, r.d.Program(), in)
		fl, l3len, wellFormed := oracle(in)
		v, isVIP := match(fl)
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
			overhead := 40
			if v.Backends[0].Addr.Is4() {
				overhead = 20
			}
			if l3len+overhead <= int(r.d.Options().MTU) {
				t.Fatalf("well-formed packet to %s got verdict %d:\n%x", v.Key, verdict, in)
			}
		}
	})
}
