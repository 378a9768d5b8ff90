package xdp

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/l4lb/l4lb/pkg/lb"
)

// withMACs returns frame with the Ethernet addresses an encapsulated copy of it carries:
// decap keeps the outer frame's MACs and hands the kernel the inner packet.
func withMACs(frame []byte) []byte {
	out := append([]byte(nil), frame...)
	copy(out[0:6], macNextHop)
	copy(out[6:12], macLB)
	return out
}

func TestPrivilegedDecapTable(t *testing.T) {
	r := newRig(t, Options{})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11")})
	r.setVIP(lb.VIP{Key: key("2001:db8:f::10", 80, tcp), Backends: backends(11, "2001:db8:b::11")})
	r.setVIP(lb.VIP{Key: key("203.0.113.30", 80, tcp), Backends: backends(11, "2001:db8:b::11")})
	r.setVIP(lb.VIP{Key: key("203.0.113.99", 80, tcp), Backends: backends(1, "198.51.100.11")})

	d, err := LoadDecap()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, a := range []string{"203.0.113.10", "2001:db8:f::10", "203.0.113.30"} {
		if err := d.AddVIP(mustAddr(a)); err != nil {
			t.Fatal(err)
		}
	}

	// encap runs the LB on p and returns the transmitted frame: the decap table's inputs
	// are the real output of the encapsulating program.
	encap := func(t *testing.T, p pkt) []byte {
		ret, out := r.run(p.build(t))
		if ret != xdpTx {
			t.Fatalf("lb verdict %d for %+v", ret, p)
		}
		return out
	}
	web4 := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "AP", payload: 300}
	web6 := pkt{src: cli6, dst: "2001:db8:f::10", proto: tcp, sport: 40000, dport: 80, flags: "AP", payload: 300}
	mixed := pkt{src: cli4, dst: "203.0.113.30", proto: tcp, sport: 40000, dport: 80, flags: "S"}
	other := pkt{src: cli4, dst: "203.0.113.99", proto: tcp, sport: 40000, dport: 80, flags: "S"}
	tagged := web4
	tagged.vlan = 42

	cases := []struct {
		name    string
		in      func(t *testing.T) []byte
		verdict uint32
		want    func(t *testing.T) []byte // nil: untouched
		stats   map[string]uint64
	}{
		{"ipip to a local vip", func(t *testing.T) []byte { return encap(t, web4) }, xdpPass,
			func(t *testing.T) []byte { return withMACs(web4.build(t)) }, map[string]uint64{"decap_ok": 1}},
		{"ip6ip6 to a local vip", func(t *testing.T) []byte { return encap(t, web6) }, xdpPass,
			func(t *testing.T) []byte { return withMACs(web6.build(t)) }, map[string]uint64{"decap_ok": 1}},
		{"4in6 to a local vip gets the ipv4 ethertype back", func(t *testing.T) []byte { return encap(t, mixed) }, xdpPass,
			func(t *testing.T) []byte { return withMACs(mixed.build(t)) }, map[string]uint64{"decap_ok": 1}},
		{"vlan tag is kept", func(t *testing.T) []byte { return encap(t, tagged) }, xdpPass,
			func(t *testing.T) []byte { return withMACs(tagged.build(t)) }, map[string]uint64{"decap_ok": 1}},
		{"6in4 to a local vip", func(t *testing.T) []byte {
			outer := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolIPv6, SrcIP: mustAddr("192.0.2.1").AsSlice(), DstIP: mustAddr("198.51.100.11").AsSlice()}
			return serialize(t, append(ethLayers(0, layers.EthernetTypeIPv4), outer, gopacket.Payload(web6.build(t)[14:]))...)
		}, xdpPass, func(t *testing.T) []byte {
			b := web6.build(t)
			copy(b[0:6], macLB)
			copy(b[6:12], macRouter)
			return b
		}, map[string]uint64{"decap_ok": 1}},
		{"encapsulated to a vip that is not local passes", func(t *testing.T) []byte { return encap(t, other) }, xdpPass, nil,
			map[string]uint64{"pass_not_local_vip": 1}},
		{"plain tcp passes", func(t *testing.T) []byte { return web4.build(t) }, xdpPass, nil, map[string]uint64{"pass_not_encap": 1}},
		{"plain ipv6 passes", func(t *testing.T) []byte { return web6.build(t) }, xdpPass, nil, map[string]uint64{"pass_not_encap": 1}},
		{"arp passes", func(t *testing.T) []byte {
			b := web4.build(t)
			binary.BigEndian.PutUint16(b[12:], 0x0806)
			return b
		}, xdpPass, nil, map[string]uint64{"pass_not_encap": 1}},
		{"outer ipv4 fragment passes to the kernel", func(t *testing.T) []byte {
			b := encap(t, web4)
			binary.BigEndian.PutUint16(b[14+6:], 0x2000)
			return b
		}, xdpPass, nil, map[string]uint64{"pass_fragment": 1}},
		{"inner header cut short", func(t *testing.T) []byte { return encap(t, web4)[:14+20+10] }, xdpDrop, nil,
			map[string]uint64{"drop_malformed": 1}},
		{"inner ipv6 header cut short", func(t *testing.T) []byte { return encap(t, web6)[:14+40+30] }, xdpDrop, nil,
			map[string]uint64{"drop_malformed": 1}},
		{"outer ihl below 5", func(t *testing.T) []byte {
			b := encap(t, web4)
			b[14] = 0x44
			return b
		}, xdpDrop, nil, map[string]uint64{"drop_malformed": 1}},
		{"inner version does not match the outer protocol", func(t *testing.T) []byte {
			b := encap(t, web4)
			b[14+20] = 0x65
			return b
		}, xdpDrop, nil, map[string]uint64{"drop_malformed": 1}},
		{"outer ipv4 header cut short passes", func(t *testing.T) []byte { return encap(t, web4)[:14+12] }, xdpPass, nil,
			map[string]uint64{"pass_not_encap": 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.in(t)
			before, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			got, out := runProg(t, d.Program(), in)
			after, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if got != c.verdict {
				t.Errorf("verdict %d, want %d", got, c.verdict)
			}
			want := in
			if c.want != nil {
				want = c.want(t)
			}
			if c.verdict == xdpPass && !bytes.Equal(out, want) {
				t.Errorf("output differs:\n%s", frameDiff(want, out))
			}
			if diff := cmp.Diff(c.stats, statDelta(before, after)); diff != "" {
				t.Errorf("counter increments (-want +got):\n%s", diff)
			}
		})
	}
}
