package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/decap"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// rig: an LB namespace (the XDP maps loaded, the probe program on l0) and a backend
// namespace with the VIPs on lo, listeners on them and the decap program on b0.
type rig struct {
	lbNS, beNS *testutil.NetNS
	x          *xdp.Dataplane
	e          *Encap
	dec        *decap.Decap
}

const (
	lbAddr4, beAddr4 = "192.0.2.1", "192.0.2.2"
	lbAddr6, beAddr6 = "2001:db8:1::1", "2001:db8:1::2"
	vip4, vip6       = "203.0.113.10", "2001:db8:f::10"
)

func newRig(t *testing.T) *rig {
	t.Helper()
	testutil.RequirePrivileged(t)
	r := &rig{lbNS: testutil.NewNetNS(t, "plb"), beNS: testutil.NewNetNS(t, "pbe")}
	testutil.Veth(t, r.lbNS, "l0", r.beNS, "b0")
	r.lbNS.Run(t, "ip", "addr", "add", lbAddr4+"/24", "dev", "l0")
	r.lbNS.Run(t, "ip", "addr", "add", lbAddr6+"/64", "dev", "l0", "nodad")
	r.lbNS.Run(t, "ip", "route", "add", vip4+"/32", "via", beAddr4)
	r.lbNS.Run(t, "ip", "route", "add", vip6+"/128", "via", beAddr6)
	r.beNS.Run(t, "ip", "addr", "add", beAddr4+"/24", "dev", "b0")
	r.beNS.Run(t, "ip", "addr", "add", beAddr6+"/64", "dev", "b0", "nodad")
	r.beNS.Run(t, "ip", "addr", "add", vip4+"/32", "dev", "lo")
	r.beNS.Run(t, "ip", "addr", "add", vip6+"/128", "dev", "lo")

	var err error
	if r.x, err = xdp.Load(xdp.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.x.Close() })
	if err := r.x.SetConfig(xdp.Config{Source4: netip.MustParsePrefix(lbAddr4 + "/32"), Source6: netip.MustParsePrefix(lbAddr6 + "/128")}); err != nil {
		t.Fatal(err)
	}
	if r.e, err = Load(Options{Shared: r.x.Shared()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.e.Close() })
	if err := r.lbNS.Do(func() error { return r.e.Attach([]string{"l0"}) }); err != nil {
		t.Fatal(err)
	}
	for id, a := range map[uint32]string{1: beAddr4, 2: beAddr6} {
		if err := r.e.SetTarget(id, netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}

	// The backend: TCP on both VIPs, a UDP echo on vip4:53.
	for _, a := range []string{vip4, vip6} {
		var l net.Listener
		if err := r.beNS.Do(func() (err error) { l, err = net.Listen("tcp", net.JoinHostPort(a, "80")); return }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("be\n"))
				c.Close()
			}
		}()
	}
	var pc net.PacketConn
	if err := r.beNS.Do(func() (err error) { pc, err = net.ListenPacket("udp", net.JoinHostPort(vip4, "53")); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	r.startDecap(t)
	return r
}

func (r *rig) startDecap(t *testing.T) {
	t.Helper()
	d, err := decap.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{vip4, vip6} {
		if err := d.AddVIP(netip.MustParseAddr(a)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{lbAddr4 + "/32", lbAddr6 + "/128"} {
		if err := d.AllowFrom(netip.MustParsePrefix(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.beNS.Do(func() error { _, err := d.Attach("b0"); return err }); err != nil {
		t.Fatal(err)
	}
	r.dec = d
	t.Cleanup(func() { d.Close() })
}

// dial connects from the LB namespace with mark (0: none) and reads the first line (TCP)
// or the echo (UDP).
func (r *rig) dial(t *testing.T, network, addr string, mark uint32) error {
	t.Helper()
	var c net.Conn
	err := r.lbNS.Do(func() error {
		d := net.Dialer{Timeout: time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				if mark != 0 {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
				}
			}); err != nil {
				return err
			}
			return serr
		}}
		var err error
		c, err = d.DialContext(context.Background(), network, addr)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if network == "udp" {
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if want := map[string]string{"tcp": "be\n", "udp": "ping"}[network]; string(buf[:n]) != want {
		return errors.New("unexpected reply " + string(buf[:n]))
	}
	return nil
}

// TestPrivilegedProbeTravelsTheTunnel: a marked probe reaches the VIP on the backend only
// through the backend's decap (IPv4 and IPv6, TCP and UDP); an unmarked connect to the
// same VIP takes the plain route and does not care. With the decap stopped the marked
// probe fails, which is what the tunnel check is for. A mark naming no target (never set,
// or deleted) is dropped and counted.
func TestPrivilegedProbeTravelsTheTunnel(t *testing.T) {
	r := newRig(t)
	cases := []struct {
		network, addr string
		id            uint32
	}{
		{"tcp", net.JoinHostPort(vip4, "80"), 1},
		{"tcp", net.JoinHostPort(vip6, "80"), 2},
		{"udp", net.JoinHostPort(vip4, "53"), 1},
	}
	for _, c := range cases {
		if err := r.dial(t, c.network, c.addr, r.e.Mark(c.id)); err != nil {
			t.Errorf("%s %s through the tunnel: %v", c.network, c.addr, err)
		}
		if err := r.dial(t, c.network, c.addr, 0); err != nil {
			t.Errorf("%s %s plain: %v", c.network, c.addr, err)
		}
	}
	st, err := r.e.Stats()
	if err != nil {
		t.Fatal(err)
	}
	ds, err := r.dec.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("probe %v; decap %v", st, ds)
	if st["probe_encap4"] == 0 || st["probe_encap6"] == 0 {
		t.Errorf("probe counters %v: want IPv4 and IPv6 encapsulations", st)
	}

	if err := r.dec.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		if err := r.dial(t, c.network, c.addr, r.e.Mark(c.id)); err == nil {
			t.Errorf("%s %s through the tunnel with the decap stopped: answered", c.network, c.addr)
		}
		if err := r.dial(t, c.network, c.addr, 0); err != nil {
			t.Errorf("%s %s plain with the decap stopped: %v (the plain path does not need it)", c.network, c.addr, err)
		}
	}
	r.startDecap(t)
	if err := r.dial(t, "tcp", net.JoinHostPort(vip4, "80"), r.e.Mark(1)); err != nil {
		t.Errorf("through the tunnel with the decap back: %v", err)
	}

	before, _ := r.e.Stats()
	if err := r.dial(t, "tcp", net.JoinHostPort(vip4, "80"), r.e.Mark(77)); err == nil {
		t.Error("a probe marked with an id that names no target was answered")
	}
	if err := r.e.DeleteTarget(1); err != nil {
		t.Fatal(err)
	}
	if err := r.dial(t, "tcp", net.JoinHostPort(vip4, "80"), r.e.Mark(1)); err == nil {
		t.Error("a probe of a deleted target was answered")
	}
	after, _ := r.e.Stats()
	if after["probe_no_backend"] <= before["probe_no_backend"] {
		t.Errorf("probe_no_backend %d -> %d, want it counted", before["probe_no_backend"], after["probe_no_backend"])
	}
}

// TestPrivilegedAttachReplacesLeftFilter: a second Attach (a restarted daemon) leaves one
// probe filter, and Detach none.
func TestPrivilegedAttachReplacesLeftFilter(t *testing.T) {
	r := newRig(t)
	e2, err := Load(Options{Shared: r.x.Shared()})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if err := r.lbNS.Do(func() error { return e2.Attach([]string{"l0"}) }); err != nil {
		t.Fatal(err)
	}
	if err := e2.SetTarget(1, netip.MustParseAddr(beAddr4)); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		out := r.lbNS.Run(t, "tc", "filter", "show", "dev", "l0", "egress")
		n := 0
		for i := 0; i+len(filterName) <= len(out); i++ {
			if out[i:i+len(filterName)] == filterName {
				n++
			}
		}
		return n
	}
	if n := count(); n != 1 {
		t.Fatalf("%d probe filters after a second attach, want 1", n)
	}
	if err := r.dial(t, "tcp", net.JoinHostPort(vip4, "80"), e2.Mark(1)); err != nil {
		t.Errorf("through the second program: %v", err)
	}
	if err := r.lbNS.Do(e2.Detach); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d probe filters after detach, want 0", n)
	}
}
