package decap_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/decap"
)

// TestPrivilegedDecapOuterSource sends real IPIP and ip6ip6 over a veth to a backend
// running the decap program: from an address in an --allow-from prefix (a load balancer's
// encap source) and from one outside (anyone else who can reach the backend). Only the
// first reaches the UDP socket on the VIP; the other is dropped and counted.
//
//	sender (192.0.2.1, 192.0.2.200; 2001:db8:1::1, 2001:db8:e::5) --- be (decap, VIPs on lo)
func TestPrivilegedDecapOuterSource(t *testing.T) {
	testutil.RequireCommands(t, "ip", "ethtool")
	sender := testutil.NewNetNS(t, "sender")
	be := testutil.NewNetNS(t, "be")
	testutil.Veth(t, sender, "s0", be, "b0")
	const vip4, vip6 = "203.0.113.10", "2001:db8:f::10"
	sender.IPBatch(t,
		"addr add 192.0.2.1/24 dev s0", "addr add 192.0.2.200/24 dev s0",
		"addr add 2001:db8:1::1/64 dev s0 nodad", "addr add 2001:db8:e::5/64 dev s0 nodad",
		"route add 2001:db8:2::/64 dev s0")
	be.IPBatch(t,
		"addr add 192.0.2.2/24 dev b0", "addr add 2001:db8:2::2/64 dev b0 nodad",
		"route add 2001:db8:1::/64 dev b0", "route add 2001:db8:e::/64 dev b0",
		"addr add "+vip4+"/32 dev lo", "addr add "+vip6+"/128 dev lo nodad")
	be.Sysctl(t, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.b0.rp_filter=0")

	dec, err := decap.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dec.Close() })
	for _, a := range []string{vip4, vip6} {
		if err := dec.AddVIP(netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"192.0.2.192/26", "2001:db8:e::/64"} {
		if err := dec.AllowFrom(netip.MustParsePrefix(p)); err != nil {
			t.Fatal(err)
		}
	}
	var ln4, ln6 net.PacketConn
	if err := be.Do(func() error {
		if _, err := dec.Attach("b0"); err != nil {
			return err
		}
		if ln4, err = net.ListenPacket("udp4", vip4+":53"); err != nil {
			return err
		}
		ln6, err = net.ListenPacket("udp6", "["+vip6+"]:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln4.Close(); ln6.Close() })

	for _, c := range []struct {
		name                  string
		ln                    net.PacketConn
		allowed, stranger, to string // outer source addresses of the sender; the backend
		client, vip           string
	}{
		{"ipip", ln4, "192.0.2.200", "192.0.2.1", "192.0.2.2", "198.51.100.77", vip4},
		{"ip6ip6", ln6, "2001:db8:e::5", "2001:db8:1::1", "2001:db8:2::2", "2001:db8:c::77", vip6},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, err := dec.Stats()
			if err != nil {
				t.Fatal(err)
			}
			// The stranger first: the allowed datagram then says the socket saw only it.
			for _, s := range []struct{ from, payload string }{{c.stranger, "spoofed"}, {c.allowed, "allowed"}} {
				inner := innerUDP(t, netip.MustParseAddr(c.client), netip.MustParseAddr(c.vip), s.payload)
				if err := sender.Do(func() error { return sendTunnelled(netip.MustParseAddr(s.from), netip.MustParseAddr(c.to), inner) }); err != nil {
					t.Fatalf("send from %s: %v", s.from, err)
				}
			}
			buf := make([]byte, 64)
			_ = c.ln.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err := c.ln.ReadFrom(buf)
			if err != nil {
				t.Fatalf("the vip's socket got nothing: %v", err)
			}
			if got := string(buf[:n]); got != "allowed" {
				t.Errorf("the vip's socket got %q from %v first, want the allowed source's datagram", got, from)
			}
			_ = c.ln.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, from, err := c.ln.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the vip's socket got %q from %v (err %v): the stranger's datagram came through", buf[:n], from, err)
			}
			after, err := dec.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if d := after["drop_source_not_allowed"] - before["drop_source_not_allowed"]; d != 1 {
				t.Errorf("drop_source_not_allowed went up by %d, want 1 (counters %v)", d, after)
			}
			if d := after["decap_ok"] - before["decap_ok"]; d != 1 {
				t.Errorf("decap_ok went up by %d, want 1 (counters %v)", d, after)
			}
		})
	}
}

// innerUDP is an IP packet carrying a UDP datagram from client:40000 to vip:53.
func innerUDP(t *testing.T, client, vip netip.Addr, payload string) []byte {
	t.Helper()
	udp := &layers.UDP{SrcPort: 40000, DstPort: 53}
	var ip gopacket.SerializableLayer
	if vip.Is4() {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: client.AsSlice(), DstIP: vip.AsSlice()}
		_ = udp.SetNetworkLayerForChecksum(ip4)
		ip = ip4
	} else {
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: client.AsSlice(), DstIP: vip.AsSlice()}
		_ = udp.SetNetworkLayerForChecksum(ip6)
		ip = ip6
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, udp, gopacket.Payload(payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sendTunnelled sends inner from a raw socket bound to from: the kernel adds the outer
// header (IPv4 protocol 4, or IPv6 next header 41) with that source.
func sendTunnelled(from, to netip.Addr, inner []byte) error {
	af, proto := unix.AF_INET6, unix.IPPROTO_IPV6
	var src, dst unix.Sockaddr = &unix.SockaddrInet6{Addr: from.As16()}, &unix.SockaddrInet6{Addr: to.As16()}
	if from.Is4() {
		af, proto = unix.AF_INET, unix.IPPROTO_IPIP
		src, dst = &unix.SockaddrInet4{Addr: from.As4()}, &unix.SockaddrInet4{Addr: to.As4()}
	}
	fd, err := unix.Socket(af, unix.SOCK_RAW, proto)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, src); err != nil {
		return err
	}
	return unix.Sendto(fd, inner, 0, dst)
}
