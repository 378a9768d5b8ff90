package bgp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func freePort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// router is a plain GoBGP server standing in for the upstream router: passive, on a high
// port of 127.0.0.1, accepting whatever the speaker sends.
type router struct {
	srv  *server.BgpServer
	port uint16
}

func newRouter(t *testing.T, peerASN uint32) *router {
	return newRouterWith(t, Peer{Address: netip.MustParseAddr("127.0.0.1"), ASN: peerASN, Passive: true, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second})
}

func newRouterWith(t *testing.T, peer Peer) *router {
	t.Helper()
	r := &router{srv: server.NewBgpServer(server.LoggerOption(newLogAdapter(quiet))), port: freePort(t)}
	go r.srv.Serve()
	ctx := context.Background()
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "192.0.2.1", ListenPort: int32(r.port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatal(err)
	}
	p := apiPeer(peer)
	if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: p}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		r.srv.Stop()
	})
	return r
}

type route struct {
	prefix      string
	nextHop     string
	med         uint32
	communities []uint32
}

// routes returns what the router has learned from peers, sorted by prefix.
func (r *router) routes(t *testing.T) []route {
	t.Helper()
	var out []route
	err := r.srv.ListPath(context.Background(), &api.ListPathRequest{
		TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
	}, func(d *api.Destination) {
		for _, p := range d.Paths {
			if p.NeighborIp == "" || p.NeighborIp == "<nil>" {
				continue // the router's own
			}
			rt := route{prefix: d.Prefix}
			for _, a := range p.Pattrs {
				m, err := a.UnmarshalNew()
				if err != nil {
					t.Error(err)
					continue
				}
				switch v := m.(type) {
				case *api.NextHopAttribute:
					rt.nextHop = v.NextHop
				case *api.MultiExitDiscAttribute:
					rt.med = v.Med
				case *api.CommunitiesAttribute:
					rt.communities = v.Communities
				}
			}
			out = append(out, rt)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b route) int {
		if a.prefix < b.prefix {
			return -1
		}
		if a.prefix > b.prefix {
			return 1
		}
		return 0
	})
	return out
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSpeakerAnnouncesAndWithdrawsToAPeer(t *testing.T) {
	r := newRouter(t, 65001)
	ctx := context.Background()
	s, err := Start(ctx, Config{
		LocalASN: 65001, RouterID: netip.MustParseAddr("192.0.2.2"), ListenPort: -1,
		Peers: []Peer{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port, ConnectRetry: time.Second, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second}},
	}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(ctx)

	eventually(t, "the session to reach established", func() bool {
		ps, err := s.Peers(ctx)
		return err == nil && len(ps) == 1 && ps[0].Established && ps[0].State == "established"
	})

	web := Announcement{Prefix: netip.MustParsePrefix("203.0.113.10/32"), Communities: []uint32{65001<<16 | 100}, MED: 10}
	dns := Announcement{Prefix: netip.MustParsePrefix("203.0.113.11/32")}
	if err := s.Set(ctx, []Announcement{web, dns}); err != nil {
		t.Fatal(err)
	}
	want := []route{
		{prefix: "203.0.113.10/32", nextHop: "127.0.0.1", med: 10, communities: []uint32{65001<<16 | 100}},
		{prefix: "203.0.113.11/32", nextHop: "127.0.0.1"},
	}
	eventually(t, "both prefixes at the router", func() bool { return slices.EqualFunc(r.routes(t), want, routeEqual) })

	// A changed attribute replaces the route; withdrawing one leaves the other.
	web.MED = 20
	if err := s.Set(ctx, []Announcement{web}); err != nil {
		t.Fatal(err)
	}
	want = []route{{prefix: "203.0.113.10/32", nextHop: "127.0.0.1", med: 20, communities: []uint32{65001<<16 | 100}}}
	eventually(t, "the withdrawal and the new MED", func() bool { return slices.EqualFunc(r.routes(t), want, routeEqual) })
	if got := s.Announced(); len(got) != 1 || got[0].Prefix != web.Prefix || got[0].MED != 20 {
		t.Errorf("Announced() = %+v", got)
	}

	// The speaker learns nothing: a route the router announces is rejected on import.
	nlri, _ := anypb.New(&api.IPAddressPrefix{PrefixLen: 24, Prefix: "198.51.100.0"})
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0})
	nh, _ := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
	if _, err := r.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: &api.Path{
		Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh},
	}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the router to advertise its route", func() bool {
		n := 0
		_ = r.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
			for _, af := range p.AfiSafis {
				n += int(af.GetState().GetAdvertised())
			}
		})
		return n == 1
	})
	time.Sleep(200 * time.Millisecond)
	learned := 0
	if err := s.srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}}, func(d *api.Destination) {
		if d.Prefix == "198.51.100.0/24" {
			learned += len(d.Paths)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if learned != 0 {
		t.Errorf("the speaker installed %d routes learned from its peer", learned)
	}

	// Everything withdrawn.
	if err := s.Set(ctx, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every route withdrawn", func() bool { return len(r.routes(t)) == 0 })
	if ch := s.StateChanges()["127.0.0.1"]; ch == 0 {
		t.Error("no session state change was recorded")
	}
}

func routeEqual(a, b route) bool {
	return a.prefix == b.prefix && a.nextHop == b.nextHop && a.med == b.med && slices.Equal(a.communities, b.communities)
}

func TestStopClosesTheSession(t *testing.T) {
	r := newRouter(t, 65001)
	ctx := context.Background()
	s, err := Start(ctx, Config{
		LocalASN: 65001, RouterID: netip.MustParseAddr("192.0.2.2"), ListenPort: -1,
		Peers: []Peer{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port, ConnectRetry: time.Second}},
	}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, []Announcement{{Prefix: netip.MustParsePrefix("203.0.113.10/32")}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the route at the router", func() bool { return len(r.routes(t)) == 1 })
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the route gone after stop", func() bool { return len(r.routes(t)) == 0 })
}

func TestStartRejectsBadConfig(t *testing.T) {
	if _, err := Start(context.Background(), Config{LocalASN: 65001}, quiet); err == nil {
		t.Error("no router id: no error")
	}
	if _, err := Start(context.Background(), Config{RouterID: netip.MustParseAddr("2001:db8::1"), LocalASN: 1}, quiet); err == nil {
		t.Error("ipv6 router id: no error")
	}
}

func TestTCPMD5Password(t *testing.T) {
	for _, tc := range []struct {
		name        string
		theirs      string
		established bool
	}{{"same password", "s3cret", true}, {"wrong password", "other", false}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRouterWith(t, Peer{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65001, Passive: true, Password: tc.theirs})
			ctx := context.Background()
			s, err := Start(ctx, Config{
				LocalASN: 65001, RouterID: netip.MustParseAddr("192.0.2.2"), ListenPort: -1,
				Peers: []Peer{{Address: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port, Password: "s3cret", ConnectRetry: time.Second}},
			}, quiet)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Stop(ctx)
			up := func() bool {
				ps, err := s.Peers(ctx)
				return err == nil && len(ps) == 1 && ps[0].Established
			}
			if tc.established {
				eventually(t, "the session with matching passwords", up)
				return
			}
			time.Sleep(3 * time.Second) // three connect attempts
			if up() {
				t.Error("the session came up with different TCP-MD5 passwords")
			}
		})
	}
}
