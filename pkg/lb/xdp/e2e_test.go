package xdp_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/decap"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// TestPrivilegedEndToEnd sends a real TCP connection through the XDP program:
//
//	client --- router --- lb   (XDP: encapsulate, XDP_TX back to the router)
//	              \
//	               be          (decap, VIP on lo; replies go to the router, not the lb)
func TestPrivilegedEndToEnd(t *testing.T) {
	testutil.RequireCommands(t, "ip", "ethtool", "sysctl")
	client := testutil.NewNetNS(t, "client")
	router := testutil.NewNetNS(t, "router")
	lbNS := testutil.NewNetNS(t, "lb")
	be := testutil.NewNetNS(t, "be")
	for _, ns := range []*testutil.NetNS{client, router, lbNS, be} {
		// IPv4 only, so the LB's counters see nothing but this test's traffic.
		ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	testutil.Veth(t, client, "c0", router, "rc")
	testutil.Veth(t, router, "rl", lbNS, "l0")
	testutil.Veth(t, router, "rb", be, "b0")

	const vip = "203.0.113.10"
	client.Run(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "c0")
	client.Run(t, "ip", "route", "add", "default", "via", "198.51.100.1")
	router.Run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "rc")
	router.Run(t, "ip", "addr", "add", "192.0.2.1/26", "dev", "rl")
	router.Run(t, "ip", "addr", "add", "192.0.2.65/26", "dev", "rb")
	router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0")
	router.Run(t, "ip", "route", "add", vip+"/32", "via", "192.0.2.2")
	lbNS.Run(t, "ip", "addr", "add", "192.0.2.2/26", "dev", "l0")
	be.Run(t, "ip", "addr", "add", "192.0.2.66/26", "dev", "b0")
	be.Run(t, "ip", "addr", "add", vip+"/32", "dev", "lo")
	be.Run(t, "ip", "route", "add", "default", "via", "192.0.2.65")
	be.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.b0.rp_filter=0")
	// Encapsulation adds 20 bytes: the links that carry it get room for them.
	for _, l := range []struct {
		ns *testutil.NetNS
		If string
	}{{router, "rl"}, {lbNS, "l0"}, {router, "rb"}, {be, "b0"}} {
		l.ns.Run(t, "ip", "link", "set", l.If, "mtu", "1600")
	}

	// The LB.
	d, err := xdp.Load(xdp.Options{MTU: 1600})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.SetConfig(xdp.Config{Source4: netip.MustParsePrefix("192.0.2.192/26")}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetVIP(lb.VIP{
		Key:      lb.VIPKey{Addr: netip.MustParseAddr(vip), Port: 80, Proto: lb.ProtoTCP},
		Backends: []lb.Backend{{ID: 1, Addr: netip.MustParseAddr("192.0.2.66"), Weight: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := lbNS.Do(func() error { _, err := d.Attach("l0"); return err }); err != nil {
		t.Fatal(err)
	}
	// A veth delivers XDP_TX frames only if its peer runs an XDP program.
	pass, err := decap.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pass.Close() })
	if err := router.Do(func() error { _, err := pass.AttachPass("rl"); return err }); err != nil {
		t.Fatal(err)
	}

	// The backend: decap on its link, an echo server on the VIP.
	dec, err := decap.Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dec.Close() })
	if err := dec.AddVIP(netip.MustParseAddr(vip)); err != nil {
		t.Fatal(err)
	}
	// The LB's encap source prefix: decap accepts tunnels from nowhere else.
	if err := dec.AllowFrom(netip.MustParsePrefix("192.0.2.192/26")); err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := be.Do(func() error {
		if _, err := dec.Attach("b0"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", vip+":80")
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
				_, _ = io.Copy(c, c)
			}()
		}
	}()

	// The client: 256 KiB through the VIP and back.
	payload := make([]byte, 256<<10)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	var conn net.Conn
	if err := client.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp4", vip+":80")
		return err
	}); err != nil {
		t.Fatalf("connect to the vip: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read the echo: %v (got %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo differs: got %d bytes, want %d", len(got), len(payload))
	}

	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	dstats, err := dec.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lb counters: %v", stats)
	t.Logf("decap counters: %v", dstats)
	if stats["ct_miss"] != 1 || stats["ct_hit"] == 0 || stats["tx_encap4"] != stats["ct_miss"]+stats["ct_hit"] {
		t.Errorf("lb: want one new flow and every packet of it encapsulated, got %v", stats)
	}
	// Every tunnel packet that reached the backend was decapsulated: none was dropped by
	// the decap program. Packets the veths lost on the way (XDP_TX into a full peer ring
	// under an emulated CPU) were retransmitted by TCP: the echo above is whole.
	for k, v := range dstats {
		if strings.HasPrefix(k, "drop_") && v != 0 {
			t.Errorf("decap dropped %d packets (%s): %v", v, k, dstats)
		}
	}
	if dstats["decap_ok"] == 0 || dstats["decap_ok"] > stats["tx_encap4"] {
		t.Errorf("backend decapsulated %d packets, the lb sent %d", dstats["decap_ok"], stats["tx_encap4"])
	} else if lost := stats["tx_encap4"] - dstats["decap_ok"]; lost > 0 {
		t.Logf("%d of %d encapsulated packets lost between the nodes (retransmitted)", lost, stats["tx_encap4"])
	}
	// Direct server return: the replies went from the backend to the router to the client;
	// the LB never saw a packet that was not for the VIP.
	if stats["pass_non_vip"] != 0 {
		t.Errorf("lb saw %d packets not for the vip: replies did not go straight to the client", stats["pass_non_vip"])
	}
}
