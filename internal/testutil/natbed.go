package testutil

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/lb"
)

// NATBed is the topology the NAT data planes' tests run on: a client namespace, an LB
// namespace that forwards (the data plane under test programs it) and two backends, each
// on its own link to the LB and answering TCP and UDP on ports 80 and 53 of every address
// with "NAME PEER" (the backend's name and the address it saw the request from).
//
//	client 192.0.2.1 2001:db8:c::1 --- LB 192.0.2.2 2001:db8:c::2
//	LB 203.0.113.(4i+1)/30 2001:db8:bi::1 --- backend i 203.0.113.(4i+2) 2001:db8:bi::2
type NATBed struct {
	Client, LB *NetNS
	Backends   []*NetNS
	Addr4      []netip.Addr // backend addresses, by index
	Addr6      []netip.Addr
}

// NewNATBed builds the topology; everything is removed when tb ends.
func NewNATBed(tb testing.TB) *NATBed {
	tb.Helper()
	RequireCommands(tb, "ip", "ethtool", "sysctl")
	b := &NATBed{Client: NewNetNS(tb, "natc"), LB: NewNetNS(tb, "natlb")}
	Veth(tb, b.Client, "c0", b.LB, "l0")
	b.Client.Run(tb, "ip", "addr", "add", "192.0.2.1/24", "dev", "c0")
	b.Client.Run(tb, "ip", "addr", "add", "2001:db8:c::1/64", "dev", "c0", "nodad")
	b.Client.Run(tb, "ip", "route", "add", "default", "via", "192.0.2.2")
	b.Client.Run(tb, "ip", "-6", "route", "add", "default", "via", "2001:db8:c::2")
	b.LB.Run(tb, "ip", "addr", "add", "192.0.2.2/24", "dev", "l0")
	b.LB.Run(tb, "ip", "addr", "add", "2001:db8:c::2/64", "dev", "l0", "nodad")
	b.LB.Run(tb, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	for i := 1; i <= 2; i++ {
		be := NewNetNS(tb, fmt.Sprintf("natb%d", i))
		lbIf, beIf := fmt.Sprintf("b%d", i), "e0"
		Veth(tb, b.LB, lbIf, be, beIf)
		b.LB.Run(tb, "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/30", 4*i+1), "dev", lbIf)
		b.LB.Run(tb, "ip", "addr", "add", fmt.Sprintf("2001:db8:b%d::1/64", i), "dev", lbIf, "nodad")
		a4 := netip.MustParseAddr(fmt.Sprintf("203.0.113.%d", 4*i+2))
		a6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:b%d::2", i))
		be.Run(tb, "ip", "addr", "add", a4.String()+"/30", "dev", beIf)
		be.Run(tb, "ip", "addr", "add", a6.String()+"/64", "dev", beIf, "nodad")
		be.Run(tb, "ip", "route", "add", "default", "via", fmt.Sprintf("203.0.113.%d", 4*i+1))
		be.Run(tb, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("2001:db8:b%d::1", i))
		serveName(tb, be, fmt.Sprintf("be%d", i))
		b.Backends = append(b.Backends, be)
		b.Addr4 = append(b.Addr4, a4)
		b.Addr6 = append(b.Addr6, a6)
	}
	return b
}

// Name returns "be1" or "be2" for a backend address, "none" otherwise.
func (b *NATBed) Name(a netip.Addr) string {
	for i := range b.Backends {
		if b.Addr4[i] == a || b.Addr6[i] == a {
			return fmt.Sprintf("be%d", i+1)
		}
	}
	return "none"
}

// VIP is k served by both backends (of k's family) with the given weights (default 1),
// backend ids 1, 2 (IPv4) and 11, 12 (IPv6).
func (b *NATBed) VIP(k lb.VIPKey, flags lb.VIPFlags, weights ...uint32) lb.VIP {
	v := lb.VIP{Key: k, Flags: flags}
	for i := range b.Backends {
		a, id := b.Addr4[i], uint32(i+1)
		if k.Addr.Is6() {
			a, id = b.Addr6[i], uint32(i+11)
		}
		w := uint32(1)
		if i < len(weights) {
			w = weights[i]
		}
		v.Backends = append(v.Backends, lb.Backend{ID: id, Addr: a, Weight: w})
	}
	return v
}

// Ask sends one request from the client to the VIP, from sport (0: any), and returns
// the answer ("be1 203.0.113.5").
func (b *NATBed) Ask(k lb.VIPKey, sport uint16) (string, error) {
	return b.AskFrom(k, netip.Addr{}, sport)
}

// AskFrom is Ask from the client's address src (invalid: the route's source), which the
// caller has added to the client's c0.
func (b *NATBed) AskFrom(k lb.VIPKey, src netip.Addr, sport uint16) (string, error) {
	var answer string
	err := b.Client.Do(func() error {
		network := k.Proto.String()
		var laddr net.Addr
		if sport != 0 || src.IsValid() {
			var ip net.IP
			if src.IsValid() {
				ip = src.AsSlice()
			}
			if network == "tcp" {
				laddr = &net.TCPAddr{IP: ip, Port: int(sport)}
			} else {
				laddr = &net.UDPAddr{IP: ip, Port: int(sport)}
			}
		}
		dl := net.Dialer{Timeout: 2 * time.Second, LocalAddr: laddr}
		c, err := dl.Dial(network, netip.AddrPortFrom(k.Addr, k.Port).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if network == "udp" {
			if _, err := c.Write([]byte("hi")); err != nil {
				return err
			}
			buf := make([]byte, 100)
			n, err := c.Read(buf)
			if err != nil {
				return err
			}
			answer = string(buf[:n])
			return nil
		}
		bs, err := io.ReadAll(c)
		answer = string(bs)
		return err
	})
	return answer, err
}

// CheckAnswer checks an answer came from a backend and that the backend saw the LB
// node's address (masquerade), and returns the backend's name.
func (b *NATBed) CheckAnswer(tb testing.TB, got string) string {
	tb.Helper()
	name, peer, _ := strings.Cut(got, " ")
	pa, err := netip.ParseAddr(peer)
	if err != nil || (!strings.HasPrefix(pa.String(), "203.0.113.") && !strings.HasPrefix(pa.String(), "2001:db8:b")) {
		tb.Errorf("answer %q: the backend saw %q, want the LB node's address on its link", got, peer)
	}
	return name
}

func serveName(tb testing.TB, ns *NetNS, name string) {
	tb.Helper()
	var ls []net.Listener
	var pcs []net.PacketConn
	err := ns.Do(func() error {
		for _, p := range []string{"80", "53"} {
			l, err := net.Listen("tcp", ":"+p)
			if err != nil {
				return err
			}
			pc, err := net.ListenPacket("udp", ":"+p)
			if err != nil {
				l.Close()
				return err
			}
			ls, pcs = append(ls, l), append(pcs, pc)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				ap := netip.MustParseAddrPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "%s %s", name, ap.Addr().Unmap())
				c.Close()
			}
		}()
	}
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				ap := netip.MustParseAddrPort(from.String())
				_, _ = pc.WriteTo([]byte(fmt.Sprintf("%s %s", name, ap.Addr().Unmap())), from)
			}
		}()
	}
	tb.Cleanup(func() {
		for _, l := range ls {
			l.Close()
		}
		for _, pc := range pcs {
			pc.Close()
		}
		wg.Wait()
	})
}
