package daemon

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/lb"
)

func TestAnnouncements(t *testing.T) {
	vip := func(name, addr string, port uint16, up bool, med uint32, comms ...string) lb.VIPState {
		return lb.VIPState{Name: name, Up: up, MED: med, Communities: comms,
			VIP: lb.VIP{Key: lb.VIPKey{Addr: netip.MustParseAddr(addr), Port: port, Proto: lb.ProtoTCP}}}
	}
	off := false
	cases := []struct {
		name     string
		withdraw *bool
		global   []string
		vips     []lb.VIPState
		want     string
	}{
		{name: "up vips, v4 and v6", vips: []lb.VIPState{vip("web", "203.0.113.10", 80, true, 0), vip("web6", "2001:db8:f::10", 80, true, 0)},
			want: "[{203.0.113.10/32 [] 0} {2001:db8:f::10/128 [] 0}]"},
		{name: "a vip with no healthy backend is withdrawn", vips: []lb.VIPState{vip("web", "203.0.113.10", 80, false, 0), vip("web6", "2001:db8:f::10", 80, true, 0)},
			want: "[{2001:db8:f::10/128 [] 0}]"},
		{name: "withdraw_when_unhealthy off keeps it", withdraw: &off, vips: []lb.VIPState{vip("web", "203.0.113.10", 80, false, 0)},
			want: "[{203.0.113.10/32 [] 0}]"},
		{name: "a shared address is announced while any of its vips is up", vips: []lb.VIPState{vip("web", "203.0.113.10", 80, false, 5, "65001:1"), vip("dns", "203.0.113.10", 53, true, 7, "65001:2")},
			want: "[{203.0.113.10/32 [4259905538] 7}]"},
		{name: "communities merge and the lowest med wins", global: []string{"65001:100"}, vips: []lb.VIPState{vip("web", "203.0.113.10", 80, true, 9, "65001:1"), vip("dns", "203.0.113.10", 53, true, 3, "65001:1", "65001:2")},
			want: "[{203.0.113.10/32 [4259905537 4259905538 4259905636] 3}]"},
		{name: "nothing up, nothing announced", vips: []lb.VIPState{vip("web", "203.0.113.10", 80, false, 0)}, want: "[]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// bgp.communities reach the announcer inside each VIP's list (specFromConfig).
			cfg := &config.Config{BGP: config.BGP{Communities: tc.global}}
			var vips []lb.VIPState
			for _, v := range tc.vips {
				cfg.VIPs = append(cfg.VIPs, config.VIP{Name: v.Name, Address: v.VIP.Key.Addr.String(), Port: int(v.VIP.Key.Port),
					Protocol: "tcp", Communities: v.Communities, Backends: []config.Backend{{Address: "198.51.100.1"}}})
			}
			spec, err := specFromConfig(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range tc.vips {
				v.Communities = spec.Services[i].Communities
				vips = append(vips, v)
			}
			got, err := announcements(tc.withdraw == nil || *tc.withdraw, vips)
			if err != nil {
				t.Fatal(err)
			}
			if s := fmt.Sprint(got); s != tc.want {
				t.Errorf("got %s, want %s", s, tc.want)
			}
		})
	}
	if _, err := announcements(true, []lb.VIPState{{Name: "web", Up: true, Communities: []string{"x"}}}); err == nil {
		t.Error("bad community: no error")
	}
}
