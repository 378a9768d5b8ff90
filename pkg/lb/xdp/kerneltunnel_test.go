package xdp_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/decap"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// kernelTunnels tells whether this kernel can make ipip and ip6tnl devices: it makes and
// removes one of each in ns.
func kernelTunnels(ns *testutil.NetNS) (bool, string) {
	cmd := exec.Command("ip", "-n", ns.Name(), "-batch", "-")
	cmd.Stdin = strings.NewReader("link add probe0 type ipip external\nlink add probe1 type ip6tnl external\nlink del probe0\nlink del probe1\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return false, fmt.Sprintf("ip link add type ipip / ip6tnl: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return true, ""
}

// TestPrivilegedKernelTunnel proves the README's claim that a backend may decapsulate
// with the kernel's own ipip / ip6tnl devices instead of `l4lb decap`: real TCP through
// the XDP program to such a backend, IPIP, ip6ip6 and 4in6, with direct return.
//
//	client --- router --- lb   (XDP: encapsulate, XDP_TX back to the router)
//	              \
//	               be          (the README's tunnel devices, VIPs on lo)
func TestPrivilegedKernelTunnel(t *testing.T) {
	testutil.RequireCommands(t, "ip", "ethtool")
	be := testutil.NewNetNS(t, "be")
	ok, why := kernelTunnels(be)
	testutil.RequireKernelFeature(t, "no ipip / ip6tnl devices", ok, why)
	client := testutil.NewNetNS(t, "client")
	router := testutil.NewNetNS(t, "router")
	lbNS := testutil.NewNetNS(t, "lb")
	testutil.Veth(t, client, "c0", router, "rc")
	testutil.Veth(t, router, "rl", lbNS, "l0")
	testutil.Veth(t, router, "rb", be, "b0")
	// Few processes: in the VM under emulation each costs about a second.
	client.IPBatch(t,
		"addr add 198.51.100.2/24 dev c0",
		"addr add 2001:db8:c::2/64 dev c0 nodad",
		"route add default via 198.51.100.1",
		"route add ::/0 via 2001:db8:c::1")
	router.IPBatch(t,
		"addr add 198.51.100.1/24 dev rc",
		"addr add 2001:db8:c::1/64 dev rc nodad",
		"addr add 192.0.2.1/26 dev rl",
		"addr add 2001:db8:1::1/64 dev rl nodad",
		"addr add 192.0.2.65/26 dev rb",
		"addr add 2001:db8:2::1/64 dev rb nodad",
		// Encapsulation adds 20 or 40 bytes.
		"link set rl mtu 1600",
		"link set rb mtu 1600")
	router.Sysctl(t, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0")
	lbNS.IPBatch(t,
		"addr add 192.0.2.2/26 dev l0",
		"addr add 2001:db8:1::2/64 dev l0 nodad",
		"link set l0 mtu 1600")
	beCmds := []string{
		"addr add 192.0.2.66/26 dev b0",
		"addr add 2001:db8:2::2/64 dev b0 nodad",
		"route add default via 192.0.2.65",
		"route add ::/0 via 2001:db8:2::1",
		"link set b0 mtu 1600",
	}
	var routerCmds []string

	// Each case: its own VIP, routed to the lb, local on the backend.
	be4, be6 := netip.MustParseAddr("192.0.2.66"), netip.MustParseAddr("2001:db8:2::2")
	cases := []struct {
		name    string
		vip     string
		backend netip.Addr
	}{
		{"ipip", "203.0.113.20", be4},
		{"ip6ip6", "2001:db8:f::20", be6},
		{"4in6", "203.0.113.21", be6},
	}
	d, err := xdp.Load(xdp.Options{MTU: 1600})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.SetConfig(xdp.Config{Source4: netip.MustParsePrefix("192.0.2.192/26"), Source6: netip.MustParsePrefix("2001:db8:1:1::/64")}); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		vip := netip.MustParseAddr(c.vip)
		if _, err := d.SetVIP(lb.VIP{Key: lb.VIPKey{Addr: vip, Port: 80, Proto: lb.ProtoTCP},
			Backends: []lb.Backend{{ID: uint32(i + 1), Addr: c.backend, Weight: 1}}}); err != nil {
			t.Fatal(err)
		}
		if vip.Is4() {
			routerCmds = append(routerCmds, "route add "+c.vip+"/32 via 192.0.2.2")
			beCmds = append(beCmds, "addr add "+c.vip+"/32 dev lo")
		} else {
			routerCmds = append(routerCmds, "route add "+c.vip+"/128 via 2001:db8:1::2")
			beCmds = append(beCmds, "addr add "+c.vip+"/128 dev lo nodad")
		}
	}
	router.IPBatch(t, routerCmds...)
	be.IPBatch(t, beCmds...)
	if err := lbNS.Do(func() error { _, err := d.Attach("l0"); return err }); err != nil {
		t.Fatal(err)
	}
	pass, err := decap.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pass.Close() })
	if err := router.Do(func() error { _, err := pass.AttachPass("rl"); return err }); err != nil {
		t.Fatal(err)
	}

	// The backend: the README's commands, no l4lb program.
	testutil.KernelTunnelBackend(t, be)
	var ln net.Listener
	if err := be.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", ":80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, "be saw "+c.LocalAddr().String()+" "+line)
			}()
		}
	}()

	before, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			addr := net.JoinHostPort(c.vip, "80")
			var got string
			err := client.Do(func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				if err != nil {
					return err
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				// Large enough to need several segments both ways.
				msg := strings.Repeat("x", 4000) + "\n"
				if _, err := io.WriteString(conn, msg); err != nil {
					return err
				}
				got, err = bufio.NewReader(conn).ReadString('\n')
				return err
			})
			if err != nil {
				out, _ := be.Output("ip", "-s", "link", "show")
				t.Fatalf("request to %s: %v\nbackend links:\n%s", addr, err, out)
			}
			if want := "be saw " + addr + " "; !strings.HasPrefix(got, want) || len(got) != len(want)+4001 {
				t.Errorf("answer %.60q..., want %q and the 4000-byte request back", got, want)
			}
		})
	}
	after, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lb counters: %v", after)
	if after["tx_encap4"] == before["tx_encap4"] || after["tx_encap6"] == before["tx_encap6"] {
		t.Errorf("the lb encapsulated %d IPv4 and %d IPv6 packets, want both > 0", after["tx_encap4"]-before["tx_encap4"], after["tx_encap6"]-before["tx_encap6"])
	}
	// Direct return: the lb saw only packets to the VIPs (and no replies).
	if after["pass_non_vip"] != before["pass_non_vip"] {
		t.Logf("lb passed %d packets not for a vip (neighbour discovery and the like)", after["pass_non_vip"]-before["pass_non_vip"])
	}
}
