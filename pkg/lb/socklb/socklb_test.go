package socklb

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/probe"
)

var (
	v4 = backendAddrs[:3]
	v6 = backendAddrs[3:]
)

// names counts the answers by backend name and fails on any error or wrong peer.
func names(t *testing.T, rs []clientResult, wantPeer string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i, r := range rs {
		if r.Err != "" {
			t.Fatalf("round %d: %s", i, r.Err)
		}
		if r.Peer != wantPeer {
			t.Errorf("round %d: peer %s, want %s (the vip)", i, r.Peer, wantPeer)
		}
		got[r.Reply]++
	}
	return got
}

func wantAll(t *testing.T, got map[string]int, addrs []netip.Addr) {
	t.Helper()
	total := 0
	for _, n := range got {
		total += n
	}
	for _, a := range addrs {
		if got[backendName(a)] == 0 {
			t.Errorf("backend %s got none of %d connects: %v", a, total, got)
		}
	}
	if len(got) != len(addrs) {
		t.Errorf("answers from %v, want exactly %v", got, addrs)
	}
}

func TestPrivilegedTCP(t *testing.T) {
	e := newEnv(t, "")
	id4 := e.setVIP("203.0.113.10", 80, lb.ProtoTCP, weights(1, v4...))
	id6 := e.setVIP("2001:db8:f::10", 80, lb.ProtoTCP, weights(1, v6...))

	t.Run("ipv4", func(t *testing.T) {
		rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 30}, true)
		wantAll(t, names(t, rs, "203.0.113.10:80"), v4)
	})
	t.Run("ipv6", func(t *testing.T) {
		rs := e.client(clientSpec{Proto: "tcp", Family: 6, Addr: "2001:db8:f::10", Port: 80, Count: 30}, true)
		wantAll(t, names(t, rs, "[2001:db8:f::10]:80"), v6)
	})
	t.Run("v4-mapped on AF_INET6", func(t *testing.T) {
		rs := e.client(clientSpec{Proto: "tcp", Family: 6, Addr: "::ffff:203.0.113.10", Port: 80, Count: 30}, true)
		wantAll(t, names(t, rs, "[::ffff:203.0.113.10]:80"), v4)
	})
	c4, err := e.sock.Counters(id4)
	if err != nil {
		t.Fatal(err)
	}
	c6, err := e.sock.Counters(id6)
	if err != nil {
		t.Fatal(err)
	}
	if c4.Connects != 60 || c6.Connects != 30 || c4.Sendmsgs != 0 {
		t.Errorf("counters: vip4 %+v (want 60 connects), vip6 %+v (want 30)", c4, c6)
	}

	t.Run("a new vip in a reused id starts from zero", func(t *testing.T) {
		if err := e.xdp.DeleteVIP(lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.ProtoTCP}); err != nil {
			t.Fatal(err)
		}
		// The VIP comes back for the subtests after this one, skipped or not.
		defer func() {
			e.xdp.DeleteVIP(lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.20"), Port: 80, Proto: lb.ProtoTCP})
			e.setVIP("203.0.113.10", 80, lb.ProtoTCP, weights(1, v4...))
		}()
		id := e.setVIP("203.0.113.20", 80, lb.ProtoTCP, weights(1, v4...))
		if id != id4 {
			t.Skipf("id %d not reused (was %d)", id, id4)
		}
		if c, err := e.sock.Counters(id); err != nil || c != (VIPCounters{}) {
			t.Errorf("counters of the new vip: %+v, %v", c, err)
		}
	})
	t.Run("a tunnel health probe reaches the vip itself", func(t *testing.T) {
		// The daemon's probe sockets carry probe.DefaultMark | id: left to the network
		// path (here: no route), whatever other marks do.
		e.setVIP("203.0.113.10", 53, lb.ProtoUDP, weights(1, v4...))
		for _, c := range []clientSpec{
			{Proto: "tcp", Port: 80, Mark: probe.DefaultMark | 1},
			{Proto: "udp", Port: 53, Mark: probe.DefaultMark | 7, Connect: true}, // connect hook
			{Proto: "udp", Port: 53, Mark: probe.DefaultMark | 7},                // sendmsg hook
		} {
			c.Family, c.Addr, c.Count = 4, "203.0.113.10", 1
			rs := e.client(c, true)
			if len(rs) != 1 || !strings.Contains(rs[0].Err, "network is unreachable") {
				t.Errorf("probe %+v: %+v, want the plain kernel's network unreachable", c, rs)
			}
		}
		rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 1, Mark: 0x1234}, true)
		names(t, rs, "203.0.113.10:80") // another mark is balanced as ever
	})
	t.Run("outside the cgroup", func(t *testing.T) {
		rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 1}, false)
		if len(rs) != 1 || !strings.Contains(rs[0].Err, "network is unreachable") {
			t.Fatalf("connect from outside the cgroup: %+v, want the plain kernel's network unreachable", rs)
		}
	})
	t.Run("other destinations untouched", func(t *testing.T) {
		rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "198.51.100.2", Port: 80, Count: 3}, true)
		got := names(t, rs, "198.51.100.2:80")
		if got[backendName(v4[1])] != 3 {
			t.Fatalf("direct connects: %v", got)
		}
	})
	t.Run("detach restores plain behaviour", func(t *testing.T) {
		if err := e.sock.Detach(); err != nil {
			t.Fatal(err)
		}
		rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 1}, true)
		if len(rs) != 1 || !strings.Contains(rs[0].Err, "network is unreachable") {
			t.Fatalf("connect after detach: %+v, want network unreachable", rs)
		}
	})
}

func TestPrivilegedUDP(t *testing.T) {
	e := newEnv(t, "")
	e.setVIP("203.0.113.10", 53, lb.ProtoUDP, weights(1, v4...))
	e.setVIP("2001:db8:f::10", 53, lb.ProtoUDP, weights(1, v6...))
	for _, tc := range []struct {
		name    string
		spec    clientSpec
		peer    string
		backend []netip.Addr
	}{
		{"ipv4 unconnected", clientSpec{Family: 4, Addr: "203.0.113.10"}, "203.0.113.10:53", v4},
		{"ipv4 connected", clientSpec{Family: 4, Addr: "203.0.113.10", Connect: true}, "203.0.113.10:53", v4},
		{"ipv6 unconnected", clientSpec{Family: 6, Addr: "2001:db8:f::10"}, "[2001:db8:f::10]:53", v6},
		{"ipv6 connected", clientSpec{Family: 6, Addr: "2001:db8:f::10", Connect: true}, "[2001:db8:f::10]:53", v6},
		{"v4-mapped unconnected", clientSpec{Family: 6, Addr: "::ffff:203.0.113.10"}, "[::ffff:203.0.113.10]:53", v4},
		{"v4-mapped connected", clientSpec{Family: 6, Addr: "::ffff:203.0.113.10", Connect: true}, "[::ffff:203.0.113.10]:53", v4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			s.Proto, s.Port, s.Count = "udp", 53, 30
			rs := e.client(s, true)
			wantAll(t, names(t, rs, tc.peer), tc.backend)
		})
	}
}

// An ICMP echo ("ping") socket is SOCK_DGRAM too, and connect and getpeername hooks run
// for it, but it is no UDP socket: pinging a VIP address must reach that address, not a
// backend of a UDP VIP that happens to share the address and the port given to connect.
// The VIPs are on lo as well here, so an untouched ping is answered by the VIP itself.
func TestPrivilegedPingSocketUntouched(t *testing.T) {
	e := newEnv(t, "")
	e.ns.Sysctl(t, "net.ipv4.ping_group_range=0 2147483647")
	e.ns.IPBatch(t, "addr add 203.0.113.10/32 dev lo", "addr add 2001:db8:f::10/128 dev lo nodad")
	id4 := e.setVIP("203.0.113.10", 53, lb.ProtoUDP, weights(1, v4...))
	id6 := e.setVIP("2001:db8:f::10", 53, lb.ProtoUDP, weights(1, v6...))
	for _, tc := range []struct {
		name string
		fam  int
		vip  string
		peer string
		be   []netip.Addr
		id   uint32
	}{
		{"ipv4", 4, "203.0.113.10", "203.0.113.10:53", v4, id4},
		{"ipv6", 6, "2001:db8:f::10", "[2001:db8:f::10]:53", v6, id6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := e.sock.Counters(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range e.client(clientSpec{Proto: "ping", Family: tc.fam, Addr: tc.vip, Port: 53, Count: 3}, true) {
				if r.Err != "" || r.Peer != tc.peer || r.Reply != tc.vip {
					t.Errorf("ping %d: %+v; want peer %s and the echo reply from %s (the vip), no error", i, r, tc.peer, tc.vip)
				}
			}
			// A UDP socket to the same address and port is balanced as before.
			rs := e.client(clientSpec{Proto: "udp", Family: tc.fam, Addr: tc.vip, Port: 53, Connect: true, Count: 3}, true)
			for name := range names(t, rs, tc.peer) {
				if !slices.ContainsFunc(tc.be, func(a netip.Addr) bool { return backendName(a) == name }) {
					t.Errorf("udp answered by %q, want one of the backends %v", name, tc.be)
				}
			}
			after, err := e.sock.Counters(tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if got := after.Connects - before.Connects; got != 3 {
				t.Errorf("the vip's translated connects went up by %d, want 3 (the udp sockets only)", got)
			}
		})
	}
}

// Two VIPs with the same single backend address and port: a socket talking to each at
// the same time must see its own VIP as the source of the answers. A reverse map keyed
// by backend address and port alone would give one of them the other's VIP.
func TestPrivilegedUDPSharedBackend(t *testing.T) {
	e := newEnv(t, "")
	e.setVIP("203.0.113.10", 53, lb.ProtoUDP, weights(1, v4[0]))
	e.setVIP("203.0.113.11", 53, lb.ProtoUDP, weights(1, v4[0]))
	for _, connect := range []bool{false, true} {
		// A sends (or connects and exchanges once) and holds its socket; B talks to the
		// other VIP; then A reads (or exchanges again).
		a := e.startHeld(clientSpec{Proto: "udp", Family: 4, Addr: "203.0.113.10", Port: 53, Connect: connect})
		first := a.next()
		rb := e.client(clientSpec{Proto: "udp", Family: 4, Addr: "203.0.113.11", Port: 53, Connect: connect, Count: 3}, true)
		last := a.release()
		ra := []clientResult{last}
		if connect {
			ra = append(ra, first)
		}
		names(t, ra, "203.0.113.10:53")
		names(t, rb, "203.0.113.11:53")
	}
}

// A drained (weight 0) or removed backend gets no new connects; a connection made before
// keeps working, since it is connected straight to the backend.
func TestPrivilegedDrain(t *testing.T) {
	e := newEnv(t, "")
	e.setVIP("203.0.113.10", 80, lb.ProtoTCP, weights(1, v4...))

	// Hold connections until every backend has one.
	var hs []*heldClient
	var firsts []clientResult
	seen := map[string]bool{}
	for i := 0; i < 40 && len(seen) < 3; i++ {
		h := e.startHeld(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80})
		r := h.next()
		if r.Err != "" {
			t.Fatalf("held connect: %+v", r)
		}
		hs, firsts = append(hs, h), append(firsts, r)
		seen[r.Reply] = true
	}
	if len(seen) != 3 {
		t.Fatalf("40 connects reached only %v", seen)
	}

	// Drain .1 (weight 0), remove .2 altogether (as an unhealthy backend leaves the ring).
	e.setVIP("203.0.113.10", 80, lb.ProtoTCP, map[netip.Addr]uint32{v4[0]: 0, v4[2]: 1})
	if err := e.xdp.DeleteBackend(2); err != nil {
		t.Fatal(err)
	}
	rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 20}, true)
	got := names(t, rs, "203.0.113.10:80")
	if got[backendName(v4[2])] != 20 {
		t.Errorf("after drain: new connects went to %v, want all 20 on %s", got, v4[2])
	}
	for i, h := range hs {
		r := h.release()
		if r.Err != "" || r.Reply != firsts[i].Reply || r.Peer != "203.0.113.10:80" {
			t.Errorf("established connection after drain: %+v, want %s answering", r, firsts[i].Reply)
		}
	}
}

// The sampled connects name the process that made them.
func TestPrivilegedClients(t *testing.T) {
	e := newEnv(t, "")
	id := e.setVIP("203.0.113.10", 80, lb.ProtoTCP, weights(1, v4...))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.sock.Run(ctx) }()
	rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 5}, true)
	names(t, rs, "203.0.113.10:80")
	var cs []Client
	for i := 0; i < 100; i++ {
		if cs, _ = e.sock.TopClients(id, 10); len(cs) > 0 && cs[0].Connects == 5 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Connects != 5 || cs[0].Comm != "socklb.test" || cs[0].PIDs != 1 || cs[0].LastPID == 0 {
		t.Fatalf("top clients: %+v, want one socklb.test with 5 connects from one pid", cs)
	}
	cgid, err := cgroupID(e.cgroup)
	if err != nil {
		t.Fatal(err)
	}
	if cs[0].CgroupID != cgid {
		t.Errorf("cgroup id %d, want the test cgroup's %d", cs[0].CgroupID, cgid)
	}
}
