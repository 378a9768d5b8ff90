package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/l4lb/l4lb/pkg/bgp"
	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
)

// announcer is the controller's lb.Announcer. It turns VIP states into BGP announcements
// and holds them back until the data plane is attached: a node announces only what it
// can forward.
type announcer struct {
	d *Daemon

	mu       sync.Mutex
	speaker  *bgp.Speaker // nil until the data plane is attached, and after stop
	lastErr  error
	disabled bool // withdrawn for shutdown
	// withdrawUnhealthy: bgp.withdraw_when_unhealthy, fixed for the speaker's life.
	withdrawUnhealthy bool
}

// Announce implements lb.Announcer. Before the speaker starts it does nothing; the
// daemon asks the controller to announce again once it has.
func (a *announcer) Announce(ctx context.Context, vips []lb.VIPState) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.speaker == nil || a.disabled {
		return nil
	}
	anns, err := announcements(a.withdrawUnhealthy, vips)
	if err == nil {
		err = a.speaker.Set(ctx, anns)
	}
	a.lastErr = err
	return err
}

// start starts the speaker; the daemon calls it once the data plane is attached.
func (a *announcer) start(ctx context.Context, cfg *config.Config) error {
	sc, err := speakerConfig(cfg)
	if err != nil {
		return err
	}
	sp, err := bgp.Start(ctx, sc, a.d.log)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.speaker = sp
	a.withdrawUnhealthy = cfg.BGP.WithdrawWhenUnhealthy == nil || *cfg.BGP.WithdrawWhenUnhealthy
	a.mu.Unlock()
	return nil
}

// waitEstablished waits until every peer's session is established or wait has passed,
// and says how many are up ("bgp: 2/2 peers established", "... after 20s").
func (a *announcer) waitEstablished(ctx context.Context, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for {
		a.mu.Lock()
		sp := a.speaker
		a.mu.Unlock()
		up, total := 0, 0
		if sp != nil {
			peers, err := sp.Peers(ctx)
			if err == nil {
				total = len(peers)
				for _, p := range peers {
					if p.Established {
						up++
					}
				}
			}
		}
		if sp != nil && total > 0 && up == total {
			return fmt.Sprintf("bgp: %d/%d peers established", up, total)
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return fmt.Sprintf("bgp: %d/%d peers established after %s", up, total, wait)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// withdraw withdraws every announcement and keeps the sessions up (shutdown, first step).
func (a *announcer) withdraw(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.disabled = true
	if a.speaker == nil {
		return nil
	}
	return a.speaker.Set(ctx, nil)
}

// stop closes the sessions.
func (a *announcer) stop(ctx context.Context) error {
	a.mu.Lock()
	sp := a.speaker
	a.speaker = nil
	a.mu.Unlock()
	if sp == nil {
		return nil
	}
	return sp.Stop(ctx)
}

// status returns the sessions and the announced prefixes (nil speaker: BGP off or stopped).
func (a *announcer) status(ctx context.Context) *BGPView {
	a.mu.Lock()
	sp, lastErr := a.speaker, a.lastErr
	a.mu.Unlock()
	if sp == nil {
		return nil
	}
	v := &BGPView{Announced: []string{}}
	peers, err := sp.Peers(ctx)
	if err != nil {
		v.Error = err.Error()
	}
	v.Peers = peers
	for _, an := range sp.Announced() {
		v.Announced = append(v.Announced, an.Prefix.String())
	}
	if lastErr != nil {
		v.Error = lastErr.Error()
	}
	v.changes = sp.StateChanges()
	return v
}

// BGPView is the BGP part of /v1/state.
type BGPView struct {
	Peers     []bgp.PeerStatus `json:"peers"`
	Announced []string         `json:"announced"`
	Error     string           `json:"error,omitempty"`
	changes   map[string]uint64
}

func speakerConfig(cfg *config.Config) (bgp.Config, error) {
	b := cfg.BGP
	rid, err := netip.ParseAddr(b.RouterID)
	if err != nil {
		return bgp.Config{}, fmt.Errorf("bgp.router_id: %w", err)
	}
	sc := bgp.Config{LocalASN: b.LocalASN, RouterID: rid, ListenPort: b.ListenPort}
	for _, p := range b.Peers {
		addr, err := netip.ParseAddr(p.Address)
		if err != nil {
			return bgp.Config{}, fmt.Errorf("bgp peer %q: %w", p.Address, err)
		}
		sc.Peers = append(sc.Peers, bgp.Peer{
			Address: addr.Unmap(), ASN: p.ASN, Port: uint16(p.Port), Password: p.Password,
			HoldTime: p.HoldTime, Keepalive: p.Keepalive, GracefulRestart: p.GracefulRestart,
		})
	}
	return sc, nil
}

// announcements maps VIP states to prefixes. Several VIPs may share an address (web on
// :80, dns on :53); the address is announced while any of them is up (or always, with
// withdraw_when_unhealthy off). Its communities are those of every announced VIP on it
// (each VIP's include bgp.communities); its MED is the lowest MED among them.
func announcements(withdraw bool, vips []lb.VIPState) ([]bgp.Announcement, error) {
	byAddr := map[netip.Addr]*bgp.Announcement{}
	var order []netip.Addr
	for _, v := range vips {
		if withdraw && !v.Up {
			continue
		}
		addr := v.VIP.Key.Addr.Unmap()
		own, err := communities(v.Communities)
		if err != nil {
			return nil, fmt.Errorf("vip %s: %w", v.Name, err)
		}
		a, ok := byAddr[addr]
		if !ok {
			a = &bgp.Announcement{Prefix: netip.PrefixFrom(addr, addr.BitLen()), Communities: []uint32{}, MED: v.MED}
			byAddr[addr] = a
			order = append(order, addr)
		} else if v.MED < a.MED {
			a.MED = v.MED
		}
		for _, c := range own {
			if !slices.Contains(a.Communities, c) {
				a.Communities = append(a.Communities, c)
			}
		}
	}
	out := make([]bgp.Announcement, 0, len(order))
	for _, addr := range order {
		a := byAddr[addr]
		slices.Sort(a.Communities)
		out = append(out, *a)
	}
	return out, nil
}

func communities(in []string) ([]uint32, error) {
	out := make([]uint32, 0, len(in))
	for _, s := range in {
		c, err := config.ParseCommunity(s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
