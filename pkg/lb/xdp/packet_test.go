package xdp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

const (
	cli4    = "198.51.100.2"
	cli6    = "2001:db8:c::2"
	router4 = "198.51.100.1"
	router6 = "2001:db8:c::1"
	tcp     = lb.ProtoTCP
	udp     = lb.ProtoUDP
)

func key(addr string, port uint16, p lb.Proto) lb.VIPKey {
	return lb.VIPKey{Addr: mustAddr(addr), Port: port, Proto: p}
}

// pktCase is one row of the packet table. Rows run in order against one data plane, so a
// row may rely on the conntrack state earlier rows left.
type pktCase struct {
	name    string
	setup   func(t *testing.T)
	in      func(t *testing.T) []byte
	verdict uint32
	// want returns the exact frame to be transmitted; nil means "the input, untouched"
	// (checked for XDP_PASS; a dropped frame's bytes do not matter).
	want func(t *testing.T, in []byte) []byte
	// stats are the exact increments of the named global counters; every other counter
	// must stay where it was.
	stats map[string]uint64
	check func(t *testing.T)
}

func build(p pkt) func(t *testing.T) []byte {
	return func(t *testing.T) []byte { return p.build(t) }
}

// raw builds from a frame-editing function applied to p's frame.
func raw(p pkt, edit func(b []byte) []byte) func(t *testing.T) []byte {
	return func(t *testing.T) []byte { return edit(p.build(t)) }
}

func statDelta(before, after map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func TestPrivilegedPacketTable(t *testing.T) {
	// A short UDP timeout: the idle case needs a last-seen time older than the timeout on
	// the monotonic clock, which in a freshly booted VM (make test-kernels) is younger
	// than the default 30 s; 10 s outlasts the seconds a row takes under TCG, traced first.
	r := newRig(t, Options{UDPTimeout: 10 * time.Second, ConntrackSize: 4096})

	web4 := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")}
	dns4 := lb.VIP{Key: key("203.0.113.10", 53, udp), Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")}
	any4 := lb.VIP{Key: key("203.0.113.20", 0, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12")}
	web6 := lb.VIP{Key: key("2001:db8:f::10", 80, tcp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12", "2001:db8:b::13")}
	dns6 := lb.VIP{Key: key("2001:db8:f::10", 53, udp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")}
	mixed := lb.VIP{Key: key("203.0.113.30", 80, tcp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")}
	nosport := lb.VIP{Key: key("203.0.113.40", 80, tcp), Flags: lb.FlagHashNoSourcePort, Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")}
	drained := lb.VIP{Key: key("203.0.113.50", 80, tcp), Backends: []lb.Backend{{ID: 4, Addr: mustAddr("198.51.100.14"), Weight: 0}}}
	change := lb.VIP{Key: key("203.0.113.60", 80, tcp), Backends: backends(5, "198.51.100.15", "198.51.100.16")}
	for _, v := range []lb.VIP{web4, dns4, any4, web6, dns6, mixed, nosport, drained, change} {
		r.setVIP(v)
	}
	// An IPv6 VIP with an IPv4 backend cannot be configured (Validate refuses it); program
	// it behind Validate's back to prove the data plane still refuses to forward.
	familyKey := key("2001:db8:f::20", 80, tcp)
	if err := r.d.SetBackend(9, mustAddr("198.51.100.19")); err != nil {
		t.Fatal(err)
	}
	table := make([]uint32, r.d.Options().RingSize)
	for i := range table {
		table[i] = 9
	}
	if err := r.d.writeRing(500, table, true); err != nil {
		t.Fatal(err)
	}
	fk := vipKey(familyKey)
	if err := r.d.objs.Vips.Put(&fk, &xdplbVipMeta{Id: 500}); err != nil {
		t.Fatal(err)
	}

	// toRing: transmitted, encapsulated to the backend the VIP's current ring picks.
	toRing := func(k lb.VIPKey, p pkt) func(t *testing.T, in []byte) []byte {
		return func(t *testing.T, in []byte) []byte {
			id := r.ringBackend(k, p.flow())
			return encapsulated(t, in, r.addrs[id], FlowHash(p.flow(), r.vips[k].Flags), macNextHop)
		}
	}
	// toBackend: transmitted to backend *id (conntrack's choice, read when the row runs).
	toBackend := func(id *uint32, k lb.VIPKey, p pkt) func(t *testing.T, in []byte) []byte {
		return func(t *testing.T, in []byte) []byte {
			return encapsulated(t, in, r.addrs[*id], FlowHash(p.flow(), r.vips[k].Flags), macNextHop)
		}
	}
	ctIs := func(p pkt, want func() (uint32, bool)) func(t *testing.T) {
		return func(t *testing.T) {
			got, ok, err := r.d.ConntrackLookup(p.flow())
			if err != nil {
				t.Fatal(err)
			}
			wantID, wantOK := want()
			if ok != wantOK || got != wantID {
				t.Errorf("conntrack for %v: got (%d, %v), want (%d, %v)", p.flow(), got, ok, wantID, wantOK)
			}
		}
	}
	ringOf := func(k lb.VIPKey, p pkt) func() (uint32, bool) {
		return func() (uint32, bool) { return r.ringBackend(k, p.flow()), true }
	}
	absent := func() (uint32, bool) { return 0, false }

	syn4 := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"}
	ack4 := syn4
	ack4.flags, ack4.payload = "AP", 100
	udp4 := pkt{src: cli4, dst: "203.0.113.10", proto: udp, sport: 5353, dport: 53, payload: 30}
	syn6 := pkt{src: cli6, dst: "2001:db8:f::10", proto: tcp, sport: 40000, dport: 80, flags: "S"}
	ack6 := syn6
	ack6.flags, ack6.payload = "A", 200
	udp6 := pkt{src: cli6, dst: "2001:db8:f::10", proto: udp, sport: 5353, dport: 53, payload: 30}
	nonVIP4 := pkt{src: cli4, dst: "198.51.100.99", proto: tcp, sport: 40000, dport: 80, flags: "S"}

	// The ring-change rows: flow chg is pinned to b0 by conntrack; the VIP then changes so
	// that its ring sends chg elsewhere.
	chg := pkt{src: cli4, dst: "203.0.113.60", proto: tcp, sport: 40100, dport: 80, flags: "S"}
	chgAck := func(t *testing.T) []byte { return with(chg, func(p *pkt) { p.flags = "A" }).build(t) }
	var b0 uint32
	var newFlow pkt
	heavy := lb.VIP{Key: change.Key, Backends: append(backends(5, "198.51.100.15", "198.51.100.16"),
		lb.Backend{ID: 7, Addr: mustAddr("198.51.100.17"), Weight: 50}, lb.Backend{ID: 8, Addr: mustAddr("198.51.100.18"), Weight: 50})}

	// setIdle makes p's conntrack entry idle past the UDP timeout, by the clock of
	// bpf_ktime_get_ns.
	setIdle := func(p pkt) func(t *testing.T) {
		return func(t *testing.T) {
			var ts unix.Timespec
			if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
				t.Fatal(err)
			}
			idle := uint64(r.d.Options().UDPTimeout + time.Second)
			now := uint64(ts.Nano())
			if now <= idle {
				t.Fatalf("monotonic clock at %s: too early to make an entry idle for %s", time.Duration(now), time.Duration(idle))
			}
			lastSeen := now - idle
			id, ok, err := r.d.ConntrackLookup(p.flow())
			if err != nil || !ok {
				t.Fatalf("conntrack entry for %v: ok=%v err=%v", p.flow(), ok, err)
			}
			ctPut(t, r.d, p.flow(), id, lastSeen)
		}
	}

	cases := []pktCase{
		// IPv4 TCP.
		{name: "v4 tcp syn is a new flow", in: build(syn4), verdict: xdpTx, want: toRing(web4.Key, syn4),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}, check: func(t *testing.T) {
				ctIs(syn4, ringOf(web4.Key, syn4))(t)
				id := r.ringBackend(web4.Key, syn4.flow())
				vc, _ := r.d.VIPCounters(0)
				bc, _, _ := r.d.PairCounters(0, id)
				if want := (Counters{Packets: 1, Bytes: 40, NewFlows: 1}); vc != want {
					t.Errorf("vip counters %+v, want %+v", vc, want)
				}
				if want := (Counters{Packets: 1, Bytes: 40}); bc != want {
					t.Errorf("backend %d counters %+v, want %+v", id, bc, want)
				}
			}},
		{name: "v4 tcp established flow hits conntrack", in: build(ack4), verdict: xdpTx, want: toRing(web4.Key, ack4),
			stats: map[string]uint64{"ct_hit": 1, "tx_encap4": 1}, check: func(t *testing.T) {
				vc, _ := r.d.VIPCounters(0)
				if want := (Counters{Packets: 2, Bytes: 40 + 140, NewFlows: 1}); vc != want {
					t.Errorf("vip counters %+v, want %+v", vc, want)
				}
			}},
		{name: "v4 tcp rst of an unknown flow creates no entry", in: build(with(syn4, func(p *pkt) { p.sport, p.flags = 40001, "R" })),
			verdict: xdpTx, want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 40001 })),
			stats: map[string]uint64{"ct_miss": 1, "ct_skip_rst": 1, "tx_encap4": 1},
			check: ctIs(with(syn4, func(p *pkt) { p.sport = 40001 }), absent)},
		{name: "v4 tcp tos is copied to the outer header", in: build(with(syn4, func(p *pkt) { p.sport, p.tos = 40002, 0xb8 })),
			verdict: xdpTx, want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 40002 })),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "v4 tcp with ip options is carried whole", in: build(with(syn4, func(p *pkt) { p.sport, p.ip4opts = 40003, true })),
			verdict: xdpTx, want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 40003 })),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "v4 short frame with ethernet padding", in: build(with(syn4, func(p *pkt) { p.sport, p.flags = 40004, "A" })),
			verdict: xdpTx, want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 40004 })),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "v4 exactly at the mtu once encapsulated", in: build(with(syn4, func(p *pkt) { p.sport, p.flags, p.payload = 40005, "A", 1440 })),
			verdict: xdpTx, want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 40005 })),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "v4 one byte over the mtu once encapsulated, no DF: dropped, no entry", in: build(with(syn4, func(p *pkt) { p.sport, p.flags, p.payload = 40006, "A", 1441 })),
			verdict: xdpDrop, stats: map[string]uint64{"ct_miss": 1, "drop_too_big": 1}, check: ctIs(with(syn4, func(p *pkt) { p.sport = 40006 }), absent)},

		// IPv4 UDP and conntrack expiry.
		{name: "v4 udp new flow", in: build(udp4), verdict: xdpTx, want: toRing(dns4.Key, udp4),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}, check: ctIs(udp4, ringOf(dns4.Key, udp4))},
		{name: "v4 udp established", in: build(udp4), verdict: xdpTx, want: toRing(dns4.Key, udp4),
			stats: map[string]uint64{"ct_hit": 1, "tx_encap4": 1}},
		{name: "v4 udp idle past the timeout is re-hashed", setup: setIdle(udp4), in: build(udp4), verdict: xdpTx, want: toRing(dns4.Key, udp4),
			stats: map[string]uint64{"ct_udp_expired": 1, "tx_encap4": 1}, check: func(t *testing.T) {
				vc, _ := r.d.VIPCounters(1)
				if vc.NewFlows != 2 || vc.Packets != 3 {
					t.Errorf("dns vip counters %+v, want 3 packets and 2 new flows", vc)
				}
			}},

		// Wildcard port, non-VIP traffic.
		{name: "wildcard port vip", in: build(pkt{src: cli4, dst: "203.0.113.20", proto: tcp, sport: 40000, dport: 8443, flags: "S"}),
			verdict: xdpTx, want: toRing(any4.Key, pkt{src: cli4, dst: "203.0.113.20", proto: tcp, sport: 40000, dport: 8443}),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "vip address, protocol without a vip passes", in: build(pkt{src: cli4, dst: "203.0.113.20", proto: udp, sport: 40000, dport: 53}),
			verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "vip address, port without a vip passes", in: build(with(syn4, func(p *pkt) { p.dport = 22 })),
			verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "non-vip ipv4 passes untouched", in: build(nonVIP4), verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "non-vip ipv6 passes untouched", in: build(pkt{src: cli6, dst: "2001:db8:c::99", proto: udp, sport: 1, dport: 2}),
			verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "arp passes", in: func(t *testing.T) []byte {
			return serialize(t, append(ethLayers(0, layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
				HwAddressSize: 6, ProtAddressSize: 4, Operation: 1, SourceHwAddress: macRouter, SourceProtAddress: mustAddr(router4).AsSlice(),
				DstHwAddress: make([]byte, 6), DstProtAddress: mustAddr("203.0.113.10").AsSlice()})...)
		}, verdict: xdpPass, stats: map[string]uint64{"pass_non_ip": 1}},
		{name: "gre to a vip address passes", in: raw(with(syn4, func(p *pkt) { p.proto = 47; p.payload = 8 }), func(b []byte) []byte { return b }),
			verdict: xdpPass, stats: map[string]uint64{"pass_other_proto": 1}},

		// IPv6.
		{name: "v6 tcp syn (ip6ip6)", in: build(syn6), verdict: xdpTx, want: toRing(web6.Key, syn6),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap6": 1}, check: ctIs(syn6, ringOf(web6.Key, syn6))},
		{name: "v6 tcp established", in: build(ack6), verdict: xdpTx, want: toRing(web6.Key, ack6),
			stats: map[string]uint64{"ct_hit": 1, "tx_encap6": 1}},
		{name: "v6 udp new flow", in: build(udp6), verdict: xdpTx, want: toRing(dns6.Key, udp6),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap6": 1}},
		{name: "v6 traffic class is copied to the outer header", in: build(with(syn6, func(p *pkt) { p.sport, p.tos = 40001, 0x28 })),
			verdict: xdpTx, want: toRing(web6.Key, with(syn6, func(p *pkt) { p.sport = 40001 })),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap6": 1}},
		{name: "v6 hop-by-hop and destination options before tcp", in: build(with(syn6, func(p *pkt) { p.sport, p.hopByHop = 40002, 2 })),
			verdict: xdpTx, want: toRing(web6.Key, with(syn6, func(p *pkt) { p.sport = 40002 })),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap6": 1}},
		{name: "v6 too many extension headers to a vip", in: build(with(syn6, func(p *pkt) { p.sport, p.hopByHop = 40003, 5 })),
			verdict: xdpDrop, stats: map[string]uint64{"drop_ipv6_ext": 1}},
		{name: "v6 one byte over the mtu once encapsulated: packet-too-big back to the client, no entry",
			in: build(with(syn6, func(p *pkt) { p.sport, p.flags, p.payload = 40004, "A", 1401 })), verdict: xdpTx,
			want:  func(t *testing.T, in []byte) []byte { return tooBigReply(t, in, 1500-40) },
			stats: map[string]uint64{"ct_miss": 1, "tx_icmp_too_big": 1}, check: ctIs(with(syn6, func(p *pkt) { p.sport = 40004 }), absent)},
		{name: "v6 exactly at the mtu once encapsulated", in: build(with(syn6, func(p *pkt) { p.sport, p.flags, p.payload = 40005, "A", 1400 })),
			verdict: xdpTx, want: toRing(web6.Key, with(syn6, func(p *pkt) { p.sport = 40005 })),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap6": 1}},
		{name: "v4 vip with ipv6 backends (4in6)", in: build(pkt{src: cli4, dst: "203.0.113.30", proto: tcp, sport: 40000, dport: 80, flags: "S"}),
			verdict: xdpTx, want: toRing(mixed.Key, pkt{src: cli4, dst: "203.0.113.30", proto: tcp, sport: 40000, dport: 80}),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap6": 1}},

		// Hashing without the source port.
		{name: "no-source-port vip: first flow", in: build(pkt{src: cli4, dst: "203.0.113.40", proto: tcp, sport: 41000, dport: 80, flags: "S"}),
			verdict: xdpTx, want: toRing(nosport.Key, pkt{src: cli4, dst: "203.0.113.40", proto: tcp, sport: 41000, dport: 80}),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "no-source-port vip: another source port, same backend and outer header",
			in: build(pkt{src: cli4, dst: "203.0.113.40", proto: tcp, sport: 41001, dport: 80, flags: "S"}), verdict: xdpTx,
			want: func(t *testing.T, in []byte) []byte {
				a := pkt{src: cli4, dst: "203.0.113.40", proto: tcp, sport: 41000, dport: 80}
				b := with(a, func(p *pkt) { p.sport = 41001 })
				if FlowHash(a.flow(), nosport.Flags) != FlowHash(b.flow(), nosport.Flags) {
					t.Fatal("flows differing only in source port hash differently on a no-source-port vip")
				}
				return toRing(nosport.Key, a)(t, in)
			}, stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},

		// VLAN.
		{name: "vlan-tagged vip packet keeps its tag", in: build(with(syn4, func(p *pkt) { p.sport, p.vlan = 40010, 100 })),
			verdict: xdpTx, want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 40010 })),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "vlan-tagged 4in6 rewrites the ethertype inside the tag", in: build(pkt{vlan: 7, src: cli4, dst: "203.0.113.30", proto: tcp, sport: 40011, dport: 80, flags: "S"}),
			verdict: xdpTx, want: toRing(mixed.Key, pkt{src: cli4, dst: "203.0.113.30", proto: tcp, sport: 40011, dport: 80}),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap6": 1}},
		{name: "vlan-tagged non-vip passes", in: build(with(nonVIP4, func(p *pkt) { p.vlan = 100 })), verdict: xdpPass,
			stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "two vlan tags (qinq) pass", in: func(t *testing.T) []byte {
			return serialize(t, &layers.Ethernet{SrcMAC: macRouter, DstMAC: macLB, EthernetType: layers.EthernetTypeQinQ},
				&layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeDot1Q}, &layers.Dot1Q{VLANIdentifier: 20, Type: layers.EthernetTypeIPv4},
				gopacket.Payload(syn4.build(t)[14:]))
		}, verdict: xdpPass, stats: map[string]uint64{"pass_qinq": 1}},

		// Truncation at every header and bad headers.
		{name: "vlan header cut short", in: func(t *testing.T) []byte {
			b := syn4.build(t)
			binary.BigEndian.PutUint16(b[12:], 0x8100)
			return b[:16]
		}, verdict: xdpDrop, stats: map[string]uint64{"drop_trunc_eth": 1}},
		{name: "ipv4 header cut short", in: raw(syn4, func(b []byte) []byte { return b[:14+10] }), verdict: xdpDrop,
			stats: map[string]uint64{"drop_trunc_ip": 1}},
		{name: "ipv4 total length past the frame", in: raw(syn4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 40+100)
			return b
		}), verdict: xdpDrop, stats: map[string]uint64{"drop_trunc_ip": 1}},
		{name: "ipv4 ihl below 5", in: raw(syn4, func(b []byte) []byte { b[14] = 0x44; return b }), verdict: xdpDrop,
			stats: map[string]uint64{"drop_bad_ip": 1}},
		{name: "ipv4 total length below the header", in: raw(syn4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 16)
			return b
		}), verdict: xdpDrop, stats: map[string]uint64{"drop_bad_ip": 1}},
		{name: "ipv4 ethertype with a version 6 header", in: raw(syn4, func(b []byte) []byte { b[14] = 0x65; return b }), verdict: xdpDrop,
			stats: map[string]uint64{"drop_bad_ip": 1}},
		{name: "tcp header cut short to a vip", in: raw(syn4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 30)
			return b[:14+30]
		}), verdict: xdpDrop, stats: map[string]uint64{"drop_trunc_l4": 1}},
		{name: "tcp header past the ip total length (rest is padding) to a vip", in: raw(syn4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 30)
			return b
		}), verdict: xdpDrop, stats: map[string]uint64{"drop_trunc_l4": 1}},
		{name: "tcp header cut short to a non-vip passes", in: raw(nonVIP4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 30)
			return b[:14+30]
		}), verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "udp header cut short to a vip", in: raw(udp4, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 24)
			return b[:14+24]
		}), verdict: xdpDrop, stats: map[string]uint64{"drop_trunc_l4": 1}},
		{name: "ipv6 header cut short", in: raw(syn6, func(b []byte) []byte { return b[:14+20] }), verdict: xdpDrop,
			stats: map[string]uint64{"drop_trunc_ip": 1}},
		{name: "ipv6 payload length past the frame", in: raw(syn6, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[18:], 200)
			return b
		}), verdict: xdpDrop, stats: map[string]uint64{"drop_trunc_ip": 1}},
		{name: "ipv6 ethertype with a version 4 header", in: raw(syn6, func(b []byte) []byte { b[14] = 0x40 | b[14]&0x0f; return b }),
			verdict: xdpDrop, stats: map[string]uint64{"drop_bad_ip": 1}},
		{name: "ipv6 tcp header cut short to a vip", in: raw(syn6, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[18:], 12)
			return b[:14+40+12]
		}), verdict: xdpDrop, stats: map[string]uint64{"drop_trunc_l4": 1}},
		{name: "ipv6 extension header cut short to a vip", in: raw(with(syn6, func(p *pkt) { p.hopByHop = 1 }), func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[18:], 1)
			return b[:14+40+1]
		}), verdict: xdpDrop, stats: map[string]uint64{"drop_ipv6_ext": 1}},

		// Fragments.
		{name: "v4 first fragment to a vip", in: build(with(syn4, func(p *pkt) { p.ip4frag = 0x2000; p.payload = 64 })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_fragment": 1}},
		{name: "v4 later fragment to a vip", in: build(with(syn4, func(p *pkt) { p.ip4frag = 0x0010; p.payload = 64 })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_fragment": 1}},
		{name: "v4 fragment to a non-vip passes", in: build(with(nonVIP4, func(p *pkt) { p.ip4frag = 0x2000 })), verdict: xdpPass,
			stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "v6 fragment header to a vip", in: func(t *testing.T) []byte {
			ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment, SrcIP: mustAddr(cli6).AsSlice(), DstIP: mustAddr("2001:db8:f::10").AsSlice()}
			frag := gopacket.Payload{6, 0, 0, 1, 0, 0, 0, 42}
			return serialize(t, append(ethLayers(0, layers.EthernetTypeIPv6), ip, frag, gopacket.Payload(syn6.build(t)[14+40:]))...)
		}, verdict: xdpDrop, stats: map[string]uint64{"drop_fragment": 1}},

		// ICMP.
		{name: "icmp frag-needed about a vip flow goes to the flow's backend", in: func(t *testing.T) []byte { return icmpTooBig(t, syn4.flow(), router4) },
			verdict: xdpTx, want: toRing(web4.Key, syn4), stats: map[string]uint64{"ct_hit": 1, "icmp_too_big_fwd": 1, "tx_encap4": 1}},
		{name: "icmpv6 packet-too-big about a vip flow goes to the flow's backend", in: func(t *testing.T) []byte { return icmpTooBig(t, syn6.flow(), router6) },
			verdict: xdpTx, want: toRing(web6.Key, syn6), stats: map[string]uint64{"ct_hit": 1, "icmp_too_big_fwd": 1, "tx_encap6": 1}},
		{name: "icmp frag-needed about an unknown flow is hashed and creates no entry",
			in: func(t *testing.T) []byte {
				return icmpTooBig(t, with(syn4, func(p *pkt) { p.sport = 49999 }).flow(), router4)
			},
			verdict: xdpTx, want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 49999 })),
			stats: map[string]uint64{"icmp_too_big_fwd": 1, "tx_encap4": 1}, check: ctIs(with(syn4, func(p *pkt) { p.sport = 49999 }), absent)},
		{name: "icmp frag-needed quoting a cut-short packet", in: func(t *testing.T) []byte {
			b := icmpTooBig(t, syn4.flow(), router4)
			binary.BigEndian.PutUint16(b[16:], 20+8+10)
			return b[:14+20+8+10]
		}, verdict: xdpDrop, stats: map[string]uint64{"drop_icmp_bad": 1}},
		{name: "icmp frag-needed about a non-vip flow passes", in: func(t *testing.T) []byte { return icmpTooBig(t, nonVIP4.flow(), router4) },
			verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "icmp echo to a vip passes", in: func(t *testing.T) []byte {
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: mustAddr(cli4).AsSlice(), DstIP: mustAddr("203.0.113.10").AsSlice()}
			return serialize(t, append(ethLayers(0, layers.EthernetTypeIPv4), ip, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)})...)
		}, verdict: xdpPass, stats: map[string]uint64{"pass_other_proto": 1}},

		// Backends, drain and ring changes.
		{name: "vip whose only backend is drained has an empty ring", in: build(pkt{src: cli4, dst: "203.0.113.50", proto: tcp, sport: 40000, dport: 80, flags: "S"}),
			verdict: xdpDrop, stats: map[string]uint64{"drop_no_backend": 1}},
		{name: "ring change: new flow pinned by conntrack", setup: func(t *testing.T) {
			// Pick a flow that the coming ring change will hash elsewhere.
			after, err := lb.MaglevTable(heavy.Backends, r.d.Options().RingSize)
			if err != nil {
				t.Fatal(err)
			}
			for ; ; chg.sport++ {
				if after[RingSlot(r.d.Options().SlotMapping, FlowHash(chg.flow(), 0), r.d.Options().RingSize)] != r.ringBackend(change.Key, chg.flow()) {
					break
				}
			}
		}, in: func(t *testing.T) []byte { return chg.build(t) }, verdict: xdpTx,
			want:  func(t *testing.T, in []byte) []byte { return toRing(change.Key, chg)(t, in) },
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}, check: func(t *testing.T) {
				b0 = r.ringBackend(change.Key, chg.flow())
			}},
		{name: "ring change: established flow keeps its backend", setup: func(t *testing.T) {
			r.setVIP(heavy)
			if r.ringBackend(change.Key, chg.flow()) == b0 {
				t.Fatalf("test flow still hashes to backend %d after the ring change", b0)
			}
		}, in: chgAck, verdict: xdpTx, want: func(t *testing.T, in []byte) []byte { return toBackend(&b0, change.Key, chg)(t, in) },
			stats: map[string]uint64{"ct_hit": 1, "tx_encap4": 1}},
		{name: "drain: established flow keeps its drained backend", setup: func(t *testing.T) {
			v := heavy
			v.Backends = append([]lb.Backend(nil), heavy.Backends...)
			for i := range v.Backends {
				if v.Backends[i].ID == b0 {
					v.Backends[i].Weight = 0
				}
			}
			r.setVIP(v)
		}, in: chgAck, verdict: xdpTx, want: func(t *testing.T, in []byte) []byte { return toBackend(&b0, change.Key, chg)(t, in) },
			stats: map[string]uint64{"ct_hit": 1, "tx_encap4": 1}},
		{name: "drain: new flows avoid the drained backend", setup: func(t *testing.T) {
			// Find a new flow that the ring before the drain would have sent to b0.
			before, err := lb.MaglevTable(heavy.Backends, r.d.Options().RingSize)
			if err != nil {
				t.Fatal(err)
			}
			for sport := uint16(42000); ; sport++ {
				newFlow = with(chg, func(p *pkt) { p.sport = sport })
				if before[RingSlot(r.d.Options().SlotMapping, FlowHash(newFlow.flow(), 0), r.d.Options().RingSize)] == b0 {
					break
				}
			}
			if got := r.ringBackend(change.Key, newFlow.flow()); got == b0 {
				t.Fatalf("drained backend %d still owns ring slots", b0)
			}
		}, in: func(t *testing.T) []byte { return newFlow.build(t) }, verdict: xdpTx,
			want:  func(t *testing.T, in []byte) []byte { return toRing(change.Key, newFlow)(t, in) },
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "removed backend: its flow is re-hashed", setup: func(t *testing.T) {
			v := lb.VIP{Key: change.Key}
			for _, b := range heavy.Backends {
				if b.ID != b0 {
					v.Backends = append(v.Backends, b)
				}
			}
			r.setVIP(v)
			if err := r.d.DeleteBackend(b0); err != nil {
				t.Fatal(err)
			}
		}, in: chgAck, verdict: xdpTx, want: func(t *testing.T, in []byte) []byte { return toRing(change.Key, chg)(t, in) },
			stats: map[string]uint64{"ct_rehash": 1, "tx_encap4": 1}, check: func(t *testing.T) { ctIs(chg, ringOf(change.Key, chg))(t) }},

		// Configuration.
		{name: "no next hop mac: back to the sender's mac", setup: func(t *testing.T) {
			c := testConfig
			c.NextHopMAC = nil
			if err := r.d.SetConfig(c); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.d.SetConfig(testConfig) })
		}, in: build(with(syn4, func(p *pkt) { p.sport = 40020 })), verdict: xdpTx,
			want: func(t *testing.T, in []byte) []byte {
				f := with(syn4, func(p *pkt) { p.sport = 40020 })
				return encapsulated(t, in, r.addrs[r.ringBackend(web4.Key, f.flow())], FlowHash(f.flow(), 0), macRouter)
			}, stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "no ipv6 source prefix: ipv6 backends unreachable", setup: func(t *testing.T) {
			c := testConfig
			c.Source6 = netip.Prefix{}
			if err := r.d.SetConfig(c); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.d.SetConfig(testConfig) })
		}, in: build(with(syn6, func(p *pkt) { p.sport = 40021 })), verdict: xdpDrop,
			stats: map[string]uint64{"ct_miss": 1, "drop_no_source": 1}},
		{name: "ipv6 packet for an ipv4 backend is dropped", in: build(pkt{src: cli6, dst: "2001:db8:f::20", proto: tcp, sport: 40000, dport: 80, flags: "S"}),
			verdict: xdpDrop, stats: map[string]uint64{"ct_miss": 1, "drop_family": 1}},
	}

	if len(cases) < 40 {
		t.Fatalf("packet table has %d rows, want at least 40", len(cases))
	}
	runTable(t, r, cases)
}

// runTable runs the rows in order against r's data plane.
func runTable(t *testing.T, r *rig, cases []pktCase) {
	t.Helper()
	// Every row is traced first (the trace must agree and write nothing) and watched by the
	// monitor (a drop gives exactly one event).
	if err := r.d.SetMonitor(MonitorSettings{Drops: true, Flows: true}); err != nil {
		t.Fatal(err)
	}
	ev := newEventReader(t, r.d)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				c.setup(t)
			}
			in := c.in(t)
			ev.pending(t)
			tr := traceAgrees(t, r.d, in)
			before, err := r.d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			got, out := r.run(in)
			after, err := r.d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			checkTrace(t, tr, got, out, statDelta(before, after))
			checkEvents(t, ev.pending(t), got, in, statDelta(before, after))
			if got != c.verdict {
				t.Errorf("verdict %d, want %d", got, c.verdict)
			}
			switch {
			case c.want != nil:
				want := c.want(t, in)
				if !bytes.Equal(out, want) {
					t.Errorf("output differs:\n%s", frameDiff(want, out))
				}
			case c.verdict == xdpPass:
				if !bytes.Equal(out, in) {
					t.Errorf("passed frame was modified:\n%s", frameDiff(in, out))
				}
			}
			if diff := cmp.Diff(c.stats, statDelta(before, after)); diff != "" {
				t.Errorf("counter increments (-want +got):\n%s", diff)
			}
			if c.check != nil {
				c.check(t)
			}
		})
	}
}

// frameDiff decodes both frames for a readable failure.
func frameDiff(want, got []byte) string {
	dec := func(b []byte) string {
		return gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default).Dump()
	}
	return fmt.Sprintf("want %d bytes:\n%x\n%s\ngot %d bytes:\n%x\n%s", len(want), want, dec(want), len(got), got, dec(got))
}

var _ = net.HardwareAddr{}
