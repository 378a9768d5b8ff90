package xdp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/decap"
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

// ECN codepoints (RFC 3168), in the low two bits of the TOS byte / traffic class.
const (
	notECT = 0
	ect1   = 1
	ect0   = 2
	ce     = 3
)

// outer rewrites the outer header of an untagged encapsulated frame: its source when src
// is valid, its ECN field when ecn >= 0. An outer IPv4 header gets a correct checksum.
func outer(frame []byte, src netip.Addr, ecn int) []byte {
	b := append([]byte(nil), frame...)
	if binary.BigEndian.Uint16(b[12:]) == unix.ETH_P_IP {
		if src.IsValid() {
			a := src.As4()
			copy(b[14+12:], a[:])
		}
		if ecn >= 0 {
			b[14+1] = b[14+1]&^3 | byte(ecn)
		}
		ipChecksum(b[14 : 14+int(b[14]&0xf)*4])
		return b
	}
	if src.IsValid() {
		a := src.As16()
		copy(b[14+8:], a[:])
	}
	if ecn >= 0 {
		b[14+1] = b[14+1]&^0x30 | byte(ecn)<<4
	}
	return b
}

// Outer sources the decap table allows (the LB's encap prefixes) and some it does not.
var (
	strangerSrc4 = mustAddr("198.51.100.9")
	strangerSrc6 = mustAddr("2001:db8:e:1::1") // just outside testSource6
)

func TestPrivilegedDecapTable(t *testing.T) {
	r := newRig(t, Options{})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11")})
	r.setVIP(lb.VIP{Key: key("2001:db8:f::10", 80, tcp), Backends: backends(11, "2001:db8:b::11")})
	r.setVIP(lb.VIP{Key: key("203.0.113.30", 80, tcp), Backends: backends(11, "2001:db8:b::11")})
	r.setVIP(lb.VIP{Key: key("203.0.113.99", 80, tcp), Backends: backends(1, "198.51.100.11")})

	d, err := decap.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, a := range []string{"203.0.113.10", "2001:db8:f::10", "203.0.113.30"} {
		if err := d.AddVIP(mustAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	// The LB's encap source prefixes (the 6in4 case below comes from 192.0.2.1).
	for _, p := range []netip.Prefix{testSource4, testSource6} {
		if err := d.AllowFrom(p); err != nil {
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
	// withTOS is p with its TOS byte / traffic class set: DSCP 40 (kept) and ecn.
	withTOS := func(p pkt, ecn uint8) pkt {
		p.tos = 40<<2 | ecn
		return p
	}
	// marked is p encapsulated, the outer ECN field then set to ecn.
	marked := func(p pkt, inner uint8, ecn int) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return outer(encap(t, withTOS(p, inner)), netip.Addr{}, ecn) }
	}
	// decapped is what the kernel must get: p with the inner ECN field ecn.
	decapped := func(p pkt, ecn uint8) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return withMACs(withTOS(p, ecn).build(t)) }
	}
	ok := map[string]uint64{"decap_ok": 1}
	okCE := map[string]uint64{"decap_ok": 1, "ecn_ce_from_outer": 1}
	notAllowed := map[string]uint64{"drop_source_not_allowed": 1}
	ceNotECT := map[string]uint64{"drop_ecn_ce_not_ect": 1}

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

		// Outer sources: only the LB's encap prefixes reach a local VIP.
		{"ipip from an outer source not allowed is dropped", func(t *testing.T) []byte {
			return outer(encap(t, web4), strangerSrc4, -1)
		}, xdpDrop, nil, notAllowed},
		{"ip6ip6 from an outer source not allowed is dropped", func(t *testing.T) []byte {
			return outer(encap(t, web6), strangerSrc6, -1)
		}, xdpDrop, nil, notAllowed},
		{"4in6 from an outer source not allowed is dropped", func(t *testing.T) []byte {
			return outer(encap(t, mixed), strangerSrc6, -1)
		}, xdpDrop, nil, notAllowed},
		{"6in4 from an outer source not allowed is dropped", func(t *testing.T) []byte {
			o := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolIPv6, SrcIP: strangerSrc4.AsSlice(), DstIP: mustAddr("198.51.100.11").AsSlice()}
			return serialize(t, append(ethLayers(0, layers.EthernetTypeIPv4), o, gopacket.Payload(web6.build(t)[14:]))...)
		}, xdpDrop, nil, notAllowed},
		{"ip6ip6 from the v4-mapped form of an allowed ipv4 source is dropped", func(t *testing.T) []byte {
			return outer(encap(t, web6), mustAddr("::ffff:192.0.2.5"), -1)
		}, xdpDrop, nil, notAllowed},
		{"ipip from the last address of the allowed prefix", func(t *testing.T) []byte {
			return outer(encap(t, web4), mustAddr("192.0.2.255"), -1)
		}, xdpPass, func(t *testing.T) []byte { return withMACs(web4.build(t)) }, ok},
		{"from an outer source not allowed to a vip that is not local passes", func(t *testing.T) []byte {
			return outer(encap(t, other), strangerSrc4, -1)
		}, xdpPass, nil, map[string]uint64{"pass_not_local_vip": 1}},

		// ECN, RFC 6040 section 4.2 (normal mode).
		{"outer ce marks an ect(0) ipv4 packet ce, checksum fixed", marked(web4, ect0, ce), xdpPass, decapped(web4, ce), okCE},
		{"outer ce marks an ect(1) ipv4 packet ce", marked(web4, ect1, ce), xdpPass, decapped(web4, ce), okCE},
		{"outer ce marks an ect(0) ipv6 packet ce", marked(web6, ect0, ce), xdpPass, decapped(web6, ce), okCE},
		{"outer ce marks an ect(1) ipv4 packet in ipv6 ce", marked(mixed, ect1, ce), xdpPass, decapped(mixed, ce), okCE},
		{"outer ce on a not-ect ipv4 packet drops it", marked(web4, notECT, ce), xdpDrop, nil, ceNotECT},
		{"outer ce on a not-ect ipv6 packet drops it", marked(web6, notECT, ce), xdpDrop, nil, ceNotECT},
		{"outer ce on a ce packet keeps it ce", marked(web4, ce, ce), xdpPass, decapped(web4, ce), ok},
		{"outer ect(1) on an ect(0) packet gives ect(1)", marked(web4, ect0, ect1), xdpPass, decapped(web4, ect1), ok},
		{"outer ect(0) on an ect(1) packet keeps ect(1)", marked(web6, ect1, ect0), xdpPass, decapped(web6, ect1), ok},
		{"outer ect(0) on a not-ect packet keeps not-ect", marked(web4, notECT, ect0), xdpPass, decapped(web4, notECT), ok},
		{"outer not-ect keeps an inner ce", marked(web6, ce, notECT), xdpPass, decapped(web6, ce), ok},
		{"outer not-ect keeps an inner ect(0)", marked(web4, ect0, notECT), xdpPass, decapped(web4, ect0), ok},
		{"source check before ecn: outer ce from a stranger on not-ect", func(t *testing.T) []byte {
			return outer(encap(t, web4), strangerSrc4, ce)
		}, xdpDrop, nil, notAllowed},
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

// A decap program nobody told where its load balancers are decapsulates nothing: what is
// encapsulated to a local VIP is dropped, whatever its outer source. 0.0.0.0/0 and ::/0
// are the explicit way to accept any source.
func TestPrivilegedDecapAllowsNoSourceUntilTold(t *testing.T) {
	r := newRig(t, Options{})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11")})
	r.setVIP(lb.VIP{Key: key("2001:db8:f::10", 80, tcp), Backends: backends(11, "2001:db8:b::11")})
	d, err := decap.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for _, a := range []string{"203.0.113.10", "2001:db8:f::10"} {
		if err := d.AddVIP(mustAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	frame := func(p pkt, src netip.Addr) []byte {
		ret, out := r.run(p.build(t))
		if ret != xdpTx {
			t.Fatalf("lb verdict %d", ret)
		}
		return outer(out, src, -1)
	}
	web4 := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40001, dport: 80, flags: "S"}
	web6 := pkt{src: cli6, dst: "2001:db8:f::10", proto: tcp, sport: 40001, dport: 80, flags: "S"}
	in4, in6 := frame(web4, strangerSrc4), frame(web6, strangerSrc6)
	try := func(when string, in []byte, want uint32, stat string) {
		t.Helper()
		before, _ := d.Stats()
		got, _ := runProg(t, d.Program(), in)
		after, _ := d.Stats()
		if got != want {
			t.Errorf("%s: verdict %d, want %d", when, got, want)
		}
		if diff := cmp.Diff(map[string]uint64{stat: 1}, statDelta(before, after)); diff != "" {
			t.Errorf("%s: counter increments (-want +got):\n%s", when, diff)
		}
	}
	try("ipv4, nothing allowed", in4, xdpDrop, "drop_source_not_allowed")
	try("ipv6, nothing allowed", in6, xdpDrop, "drop_source_not_allowed")
	// IPv4 allowed from anywhere: IPv6 is still refused.
	if err := d.AllowFrom(netip.MustParsePrefix("0.0.0.0/0")); err != nil {
		t.Fatal(err)
	}
	try("ipv4, 0.0.0.0/0 allowed", in4, xdpPass, "decap_ok")
	try("ipv6, only ipv4 allowed", in6, xdpDrop, "drop_source_not_allowed")
	if err := d.AllowFrom(netip.MustParsePrefix("::/0")); err != nil {
		t.Fatal(err)
	}
	try("ipv6, ::/0 allowed", in6, xdpPass, "decap_ok")

	for _, p := range []netip.Prefix{{}, netip.MustParsePrefix("::ffff:192.0.2.0/120")} {
		if err := d.AllowFrom(p); err == nil {
			t.Errorf("AllowFrom(%v): no error", p)
		}
	}
}
