// Package bgp announces VIPs with an embedded GoBGP speaker. Set is the whole API: it takes
// the announcements wanted now and makes the speaker's RIB match them, adding new and
// changed prefixes and withdrawing the rest by the UUID AddPath returned (a DeletePath
// without one would withdraw every local route).
//
// The speaker learns nothing: the import policy rejects every route from every peer. Each
// peer carries the address family of its own address (an IPv4 session carries the IPv4
// VIPs, an IPv6 session the IPv6 VIPs), and GoBGP sets the next hop to the session's local
// address (next hop self), so a dual-stack node has one session per family.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Config is the speaker's configuration.
type Config struct {
	LocalASN uint32
	RouterID netip.Addr
	// ListenPort: -1 listens nowhere (only connects out), 0 uses 179.
	ListenPort int32
	// ListenAddresses restricts where it listens (default: all).
	ListenAddresses []string
	Peers           []Peer
}

// Peer is one neighbour.
type Peer struct {
	Address         netip.Addr
	ASN             uint32
	Port            uint16 // 0: 179
	Password        string // TCP-MD5
	HoldTime        time.Duration
	Keepalive       time.Duration
	ConnectRetry    time.Duration // 0: 5s
	GracefulRestart bool
	Passive         bool // wait for the peer to connect
}

// Announcement is one prefix to announce.
type Announcement struct {
	Prefix      netip.Prefix
	Communities []uint32 // ASN<<16 | value
	MED         uint32
}

// PeerStatus is one neighbour's session.
type PeerStatus struct {
	Address     string    `json:"address"`
	ASN         uint32    `json:"asn"`
	State       string    `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Since       time.Time `json:"since,omitzero"`
	Advertised  uint64    `json:"advertised"`
	Established bool      `json:"established"`
}

// Speaker is a running GoBGP server.
type Speaker struct {
	srv  *server.BgpServer
	log  *slog.Logger
	stop context.CancelFunc

	mu        sync.Mutex
	announced map[netip.Prefix]announced
	changes   map[string]uint64 // session state changes per peer
}

type announced struct {
	a    Announcement
	uuid []byte
}

// Start starts the speaker and adds its peers. Stop it with Stop.
func Start(ctx context.Context, cfg Config, logger *slog.Logger) (*Speaker, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.LocalASN == 0 || !cfg.RouterID.Is4() {
		return nil, errors.New("bgp: local ASN and an IPv4 router id are required")
	}
	log := logger.With("component", "bgp")
	srv := server.NewBgpServer(server.LoggerOption(newLogAdapter(log)))
	go srv.Serve()
	s := &Speaker{srv: srv, log: log, announced: map[netip.Prefix]announced{}, changes: map[string]uint64{}}
	port := cfg.ListenPort
	if port == 0 {
		port = 179
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: cfg.LocalASN, RouterId: cfg.RouterID.String(), ListenPort: port, ListenAddresses: cfg.ListenAddresses,
	}}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	// An appliance learns no routes. GoBGP applies the global import policy to local
	// paths too, so the policy rejects by neighbour rather than by default.
	if err := rejectImports(ctx, srv); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: import policy: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if err := srv.WatchEvent(wctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.onEvent); err != nil {
		cancel()
		srv.Stop()
		return nil, fmt.Errorf("bgp: watch: %w", err)
	}
	for _, p := range cfg.Peers {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			cancel()
			srv.Stop()
			return nil, fmt.Errorf("bgp: peer %s: %w", p.Address, err)
		}
	}
	log.Info("bgp speaker started", "asn", cfg.LocalASN, "router_id", cfg.RouterID, "peers", len(cfg.Peers))
	return s, nil
}

func rejectImports(ctx context.Context, srv *server.BgpServer) error {
	if err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_NEIGHBOR, Name: "l4lb-all-peers", List: []string{"0.0.0.0/0", "::/0"},
	}}); err != nil {
		return err
	}
	pol := &api.Policy{Name: "l4lb-learn-nothing", Statements: []*api.Statement{{
		Name:       "reject-from-peers",
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: "l4lb-all-peers"}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_REJECT},
	}}}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return err
	}
	return srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_IMPORT, Policies: []*api.Policy{{Name: pol.Name}},
		DefaultAction: api.RouteAction_ACCEPT,
	}})
}

func family(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

func seconds(d, def time.Duration) uint64 {
	if d <= 0 {
		d = def
	}
	return uint64((d + time.Second - 1) / time.Second)
}

func apiPeer(p Peer) *api.Peer {
	port := uint32(p.Port)
	if port == 0 {
		port = 179
	}
	afi := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: family(p.Address), Enabled: true}}
	peer := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: seconds(p.HoldTime, 90*time.Second), KeepaliveInterval: seconds(p.Keepalive, 30*time.Second),
			ConnectRetry: seconds(p.ConnectRetry, 5*time.Second),
		}},
		Transport: &api.Transport{RemotePort: port, PassiveMode: p.Passive},
		AfiSafis:  []*api.AfiSafi{afi},
	}
	if p.GracefulRestart {
		peer.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 120}
		afi.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
	}
	return peer
}

func (s *Speaker) onEvent(ev *api.WatchEventResponse) {
	pe := ev.GetPeer()
	if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE || pe.Peer == nil {
		return
	}
	addr, state := pe.Peer.GetConf().GetNeighborAddress(), stateName(pe.Peer.GetState().GetSessionState())
	s.mu.Lock()
	s.changes[addr]++
	s.mu.Unlock()
	s.log.Info("bgp session", "peer", addr, "state", state)
}

func stateName(st api.PeerState_SessionState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "PeerState_"))
}

func path(a Announcement) (*api.Path, error) {
	pfx := a.Prefix.Masked()
	nlri, err := anypb.New(&api.IPAddressPrefix{PrefixLen: uint32(pfx.Bits()), Prefix: pfx.Addr().String()})
	if err != nil {
		return nil, err
	}
	var attrs []*anypb.Any
	add := func(m proto.Message) error {
		x, err := anypb.New(m)
		if err == nil {
			attrs = append(attrs, x)
		}
		return err
	}
	errs := []error{add(&api.OriginAttribute{Origin: 0})}
	fam := family(pfx.Addr())
	if pfx.Addr().Is4() {
		errs = append(errs, add(&api.NextHopAttribute{NextHop: "0.0.0.0"}))
	} else {
		errs = append(errs, add(&api.MpReachNLRIAttribute{Family: fam, NextHops: []string{"::"}, Nlris: []*anypb.Any{nlri}}))
	}
	if len(a.Communities) > 0 {
		errs = append(errs, add(&api.CommunitiesAttribute{Communities: a.Communities}))
	}
	if a.MED != 0 {
		errs = append(errs, add(&api.MultiExitDiscAttribute{Med: a.MED}))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &api.Path{Family: fam, Nlri: nlri, Pattrs: attrs}, nil
}

func same(a, b Announcement) bool {
	if a.Prefix != b.Prefix || a.MED != b.MED || len(a.Communities) != len(b.Communities) {
		return false
	}
	for i := range a.Communities {
		if a.Communities[i] != b.Communities[i] {
			return false
		}
	}
	return true
}

// Set makes the announced prefixes exactly anns: new and changed ones are added (a changed
// one replaces its old path without a withdrawal), the others withdrawn. On error some
// changes may have been made; calling Set again with the same input completes them.
func (s *Speaker) Set(ctx context.Context, anns []Announcement) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want := make(map[netip.Prefix]Announcement, len(anns))
	for _, a := range anns {
		if !a.Prefix.IsValid() {
			return fmt.Errorf("bgp: invalid prefix in announcement %+v", a)
		}
		a.Prefix = a.Prefix.Masked()
		want[a.Prefix] = a
	}
	var errs []error
	for pfx, old := range s.announced {
		if _, keep := want[pfx]; keep {
			continue
		}
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: family(pfx.Addr()), Uuid: old.uuid}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", pfx, err))
			continue
		}
		delete(s.announced, pfx)
		s.log.Info("withdrawn", "prefix", pfx)
	}
	for pfx, a := range want {
		if old, ok := s.announced[pfx]; ok && same(old.a, a) {
			continue
		}
		p, err := path(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", pfx, err))
			continue
		}
		res, err := s.srv.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: p})
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", pfx, err))
			continue
		}
		s.announced[pfx] = announced{a: a, uuid: res.Uuid}
		s.log.Info("announced", "prefix", pfx, "communities", a.Communities, "med", a.MED)
	}
	return errors.Join(errs...)
}

// Announced returns the prefixes announced now, sorted.
func (s *Speaker) Announced() []Announcement {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Announcement, 0, len(s.announced))
	for _, a := range s.announced {
		out = append(out, a.a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.String() < out[j].Prefix.String() })
	return out
}

// Peers returns every neighbour's session state, sorted by address.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	var out []PeerStatus
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := PeerStatus{
			Address: p.GetConf().GetNeighborAddress(), ASN: p.GetConf().GetPeerAsn(),
			State: stateName(p.GetState().GetSessionState()),
		}
		st.Established = p.GetState().GetSessionState() == api.PeerState_ESTABLISHED
		if up := p.GetTimers().GetState().GetUptime(); st.Established && up != nil {
			st.Since = up.AsTime()
		}
		for _, af := range p.GetAfiSafis() {
			st.Advertised += af.GetState().GetAdvertised()
		}
		out = append(out, st)
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out, err
}

// StateChanges returns how many session state changes each peer has had.
func (s *Speaker) StateChanges() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]uint64, len(s.changes))
	for k, v := range s.changes {
		out[k] = v
	}
	return out
}

// Stop closes every session (peers drop the routes) and stops the server.
func (s *Speaker) Stop(ctx context.Context) error {
	err := s.srv.StopBgp(ctx, &api.StopBgpRequest{})
	s.stop()
	s.srv.Stop()
	return err
}
