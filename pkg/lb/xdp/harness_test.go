package xdp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

// XDP verdicts as BPF_PROG_TEST_RUN returns them.
const (
	xdpDrop = 1
	xdpPass = 2
	xdpTx   = 3
)

var (
	macRouter  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01} // sender of every test packet
	macLB      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02} // the LB's own MAC
	macNextHop = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}

	testSource4 = netip.MustParsePrefix("192.0.2.0/24")
	testSource6 = netip.MustParsePrefix("2001:db8:e::/64")
	testConfig  = Config{NextHopMAC: macNextHop, Source4: testSource4, Source6: testSource6}
)

// rig is a loaded (unattached) data plane plus a model of what was programmed, so tests
// can predict where each flow must go.
type rig struct {
	tb     testing.TB
	d      *Dataplane
	vips   map[lb.VIPKey]lb.VIP
	tables map[lb.VIPKey][]uint32
	addrs  map[uint32]netip.Addr
}

func newRig(tb testing.TB, opts Options) *rig {
	tb.Helper()
	testutil.RequirePrivileged(tb)
	d, err := Load(opts)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	if err := d.SetConfig(testConfig); err != nil {
		tb.Fatal(err)
	}
	return &rig{tb: tb, d: d, vips: map[lb.VIPKey]lb.VIP{}, tables: map[lb.VIPKey][]uint32{}, addrs: map[uint32]netip.Addr{}}
}

func (r *rig) setVIP(v lb.VIP) {
	r.tb.Helper()
	if _, err := r.d.SetVIP(v); err != nil {
		r.tb.Fatalf("set vip %s: %v", v.Key, err)
	}
	table, err := lb.MaglevTable(v.Backends, r.d.Options().RingSize)
	if err != nil {
		r.tb.Fatal(err)
	}
	r.vips[v.Key] = v
	r.tables[v.Key] = table
	for _, b := range v.Backends {
		r.addrs[b.ID] = b.Addr
	}
}

// ringBackend is the backend the VIP's current ring gives flow f.
func (r *rig) ringBackend(k lb.VIPKey, f Flow) uint32 {
	v := r.vips[k]
	return r.tables[k][RingSlot(r.d.Options().SlotMapping, FlowHash(f, v.Flags), r.d.Options().RingSize)]
}

func (r *rig) run(in []byte) (uint32, []byte) {
	r.tb.Helper()
	return runProg(r.tb, r.d.Program(), in)
}

func runProg(tb testing.TB, p *ebpf.Program, in []byte) (uint32, []byte) {
	tb.Helper()
	out := make([]byte, len(in)+256)
	opts := ebpf.RunOptions{Data: in, DataOut: out, Repeat: 1}
	ret, err := p.Run(&opts)
	if err != nil {
		tb.Fatalf("prog test run: %v", err)
	}
	return ret, opts.DataOut
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func backends(first uint32, addrs ...string) []lb.Backend {
	out := make([]lb.Backend, len(addrs))
	for i, a := range addrs {
		out[i] = lb.Backend{ID: first + uint32(i), Addr: mustAddr(a), Weight: 1}
	}
	return out
}

// serialize builds a frame from layers, with lengths and checksums computed.
func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// pkt describes a test packet; build() turns it into a frame.
type pkt struct {
	vlan     uint16 // 0: untagged
	src, dst string
	proto    lb.Proto
	sport    uint16
	dport    uint16
	flags    string // TCP flags: S A R F P U
	payload  int    // payload bytes
	tos      uint8
	ip4opts  bool // add a 4-byte IPv4 option (IHL 6)
	ip4frag  uint16
	df       bool // IPv4 don't fragment
	hopByHop int  // IPv6 hop-by-hop headers to insert
}

func (p pkt) flow() Flow {
	return Flow{Src: mustAddr(p.src), Dst: mustAddr(p.dst), Sport: p.sport, Dport: p.dport, Proto: p.proto}
}

func ethLayers(vlan uint16, etype layers.EthernetType) []gopacket.SerializableLayer {
	if vlan == 0 {
		return []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: macRouter, DstMAC: macLB, EthernetType: etype}}
	}
	return []gopacket.SerializableLayer{
		&layers.Ethernet{SrcMAC: macRouter, DstMAC: macLB, EthernetType: layers.EthernetTypeDot1Q},
		&layers.Dot1Q{VLANIdentifier: vlan, Type: etype},
	}
}

func (p pkt) build(tb testing.TB) []byte {
	tb.Helper()
	src, dst := mustAddr(p.src), mustAddr(p.dst)
	var l3 gopacket.NetworkLayer
	var ls []gopacket.SerializableLayer
	l4proto := layers.IPProtocol(p.proto)
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, TOS: p.tos, Protocol: l4proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), FragOffset: p.ip4frag & 0x1fff}
		if p.ip4frag&0x2000 != 0 {
			ip.Flags = layers.IPv4MoreFragments
		}
		if p.df {
			ip.Flags |= layers.IPv4DontFragment
		}
		if p.ip4opts {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		}
		l3 = ip
		ls = append(ethLayers(p.vlan, layers.EthernetTypeIPv4), ip)
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, TrafficClass: p.tos, NextHeader: l4proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		l3 = ip
		ls = append(ethLayers(p.vlan, layers.EthernetTypeIPv6), ip)
		if p.hopByHop > 0 {
			ip.NextHeader = layers.IPProtocolIPv6HopByHop
			for i := 0; i < p.hopByHop; i++ {
				next := byte(layers.IPProtocolIPv6Destination)
				if i == p.hopByHop-1 {
					next = byte(l4proto)
				}
				// An 8-byte extension header: next header, length 0, PadN of 6 bytes.
				ls = append(ls, gopacket.Payload{next, 0, 1, 4, 0, 0, 0, 0})
			}
		}
	}
	switch p.proto {
	case lb.ProtoTCP:
		t := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), Seq: 1000, Window: 65535, DataOffset: 5}
		for _, c := range p.flags {
			switch c {
			case 'S':
				t.SYN = true
			case 'A':
				t.ACK = true
				t.Ack = 1
			case 'R':
				t.RST = true
			case 'F':
				t.FIN = true
			case 'P':
				t.PSH = true
			case 'U':
				t.URG = true
			}
		}
		_ = t.SetNetworkLayerForChecksum(l3)
		ls = append(ls, t)
	case lb.ProtoUDP:
		u := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		_ = u.SetNetworkLayerForChecksum(l3)
		ls = append(ls, u)
	}
	if p.payload > 0 {
		pl := make([]byte, p.payload)
		for i := range pl {
			pl[i] = byte(i)
		}
		ls = append(ls, gopacket.Payload(pl))
	}
	return serialize(tb, ls...)
}

// icmpTooBig builds an ICMP frag-needed (IPv4) or packet-too-big (IPv6) from a router to
// the VIP, quoting a packet the backend sent from the VIP to the client of flow f.
func icmpTooBig(tb testing.TB, f Flow, router string) []byte {
	tb.Helper()
	quote := pkt{src: f.Dst.String(), dst: f.Src.String(), proto: f.Proto, sport: f.Dport, dport: f.Sport, flags: "A", payload: 100}.build(tb)
	if f.Src.Is4() {
		inner := quote[14 : 14+20+8] // IP header + 8 bytes of L4, as routers quote
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: mustAddr(router).AsSlice(), DstIP: f.Dst.AsSlice()}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: 1400}
		return serialize(tb, append(ethLayers(0, layers.EthernetTypeIPv4), ip, ic, gopacket.Payload(inner))...)
	}
	inner := quote[14 : 14+40+8]
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: mustAddr(router).AsSlice(), DstIP: f.Dst.AsSlice()}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
	_ = ic.SetNetworkLayerForChecksum(ip)
	mtu := []byte{0, 0, 0x05, 0x00}
	return serialize(tb, append(ethLayers(0, layers.EthernetTypeIPv6), ip, ic, gopacket.Payload(append(mtu, inner...)))...)
}

// encapsulated is the frame the data plane must transmit for in: in's IP packet (and any
// trailing bytes) behind an outer header to backend be, with the outer source's host bits
// and the IPv6 flow label taken from hash.
func encapsulated(tb testing.TB, in []byte, be netip.Addr, hash uint32, dstMAC net.HardwareAddr) []byte {
	tb.Helper()
	l2 := 14
	tpid := layers.EthernetType(binary.BigEndian.Uint16(in[12:]))
	tagged := tpid == unix.ETH_P_8021Q || tpid == unix.ETH_P_8021AD
	var tci uint16
	if tagged {
		l2 = 18
		tci = binary.BigEndian.Uint16(in[14:])
	}
	inner := in[l2:]
	var tos uint8
	var l3len int
	innerV4 := inner[0]>>4 == 4
	if innerV4 {
		tos = inner[1]
		l3len = int(binary.BigEndian.Uint16(inner[2:]))
	} else {
		tos = uint8(binary.BigEndian.Uint32(inner) >> 20)
		l3len = int(binary.BigEndian.Uint16(inner[4:])) + 40
	}
	var ls []gopacket.SerializableLayer
	var etype layers.EthernetType
	if be.Is4() {
		etype = layers.EthernetTypeIPv4
		src := testSource4.Addr().As4()
		src[3] = byte(hash)
		ls = append(ls, &layers.IPv4{Version: 4, IHL: 5, TOS: tos, Length: uint16(l3len + 20), Flags: layers.IPv4DontFragment, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: src[:], DstIP: be.AsSlice()})
	} else {
		etype = layers.EthernetTypeIPv6
		src := testSource6.Addr().As16()
		binary.BigEndian.PutUint32(src[12:], hash)
		nh := layers.IPProtocolIPv6
		if innerV4 {
			nh = layers.IPProtocolIPv4
		}
		ls = append(ls, &layers.IPv6{Version: 6, TrafficClass: tos, FlowLabel: hash & 0xfffff, Length: uint16(l3len), NextHeader: nh, HopLimit: 64, SrcIP: src[:], DstIP: be.AsSlice()})
	}
	// The source MAC is the one the packet was sent to: the LB's own.
	srcMAC := net.HardwareAddr(in[0:6])
	eth := []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: etype}}
	if tagged {
		eth = []gopacket.SerializableLayer{
			&layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: tpid},
			&layers.Dot1Q{Priority: uint8(tci >> 13), DropEligible: tci&0x1000 != 0, VLANIdentifier: tci & 0x0fff, Type: etype},
		}
	}
	buf := gopacket.NewSerializeBuffer()
	all := append(append(eth, ls...), gopacket.Payload(inner))
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true}, all...); err != nil {
		tb.Fatalf("serialize expected: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// icmpTooBigTo is icmpTooBig with the outer destination set to outerDst.
func icmpTooBigTo(tb testing.TB, f Flow, router string, outerDst netip.Addr) []byte {
	tb.Helper()
	b := icmpTooBig(tb, f, router)
	if f.Src.Is4() {
		a := outerDst.As4()
		copy(b[14+16:], a[:])
		// Redo the IPv4 header checksum (the program does not check it; keep the frame honest).
		b[14+10], b[14+11] = 0, 0
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[14+i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(b[14+10:], ^uint16(sum))
		return b
	}
	a := outerDst.As16()
	copy(b[14+24:], a[:])
	return b
}

// tooBigReply is the frame the data plane must send back for in, a packet that does not
// fit once encapsulated: an ICMP frag-needed / packet-too-big from the VIP to the client
// announcing fit, quoting the first 64 bytes of in's IP packet, with in's L2 header (MACs
// swapped, any VLAN tag kept).
func tooBigReply(tb testing.TB, in []byte, fit uint32) []byte {
	tb.Helper()
	l2 := 14
	if et := binary.BigEndian.Uint16(in[12:]); et == unix.ETH_P_8021Q || et == unix.ETH_P_8021AD {
		l2 = 18
	}
	inner := in[l2:]
	quote := inner[:64]
	out := append([]byte(nil), in[:l2]...)
	copy(out[0:6], in[6:12])
	copy(out[6:12], in[0:6])
	var ls []gopacket.SerializableLayer
	if inner[0]>>4 == 4 {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: inner[16:20], DstIP: inner[12:16]}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 4), Seq: uint16(fit)}
		ls = []gopacket.SerializableLayer{ip, ic, gopacket.Payload(quote)}
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: inner[24:40], DstIP: inner[8:24]}
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(2, 0)}
		_ = ic.SetNetworkLayerForChecksum(ip)
		mtu := binary.BigEndian.AppendUint32(nil, fit)
		ls = []gopacket.SerializableLayer{ip, ic, gopacket.Payload(append(mtu, quote...))}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize reply: %v", err)
	}
	return append(out, buf.Bytes()...)
}

// with returns a copy of p changed by f.
func with(p pkt, f func(*pkt)) pkt { f(&p); return p }
