package ipvs

import (
	"net/netip"
	"testing"

	cipvs "github.com/cloudflare/ipvs"

	"github.com/l4lb/l4lb/pkg/lb"
)

// TestServiceAndDestination: what a VIP becomes in IPVS, flag by flag.
func TestServiceAndDestination(t *testing.T) {
	v4 := lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.ProtoTCP}
	v6 := lb.VIPKey{Addr: netip.MustParseAddr("2001:db8:f::10"), Port: 53, Proto: lb.ProtoUDP}
	for _, tc := range []struct {
		name      string
		key       lb.VIPKey
		flags     lb.VIPFlags
		backend   string
		wantFlags cipvs.Flags
		wantFwd   cipvs.ForwardType
		wantBits  int
		wantFam   cipvs.AddressFamily
	}{
		{"v4 tunnel hashes the source port", v4, 0, "192.0.2.18", flagMHFallback | flagMHPort, cipvs.Tunnel, 32, cipvs.INET},
		{"v4 without source port", v4, lb.FlagHashNoSourcePort, "192.0.2.18", flagMHFallback, cipvs.Tunnel, 32, cipvs.INET},
		{"v4 masq", v4, lb.FlagForwardMasq, "192.0.2.18", flagMHFallback | flagMHPort, cipvs.Masquerade, 32, cipvs.INET},
		{"v6 masq without source port", v6, lb.FlagForwardMasq | lb.FlagHashNoSourcePort, "2001:db8:1::2", flagMHFallback, cipvs.Masquerade, 128, cipvs.INET6},
		{"4in6 tunnel", v4, 0, "2001:db8:1::2", flagMHFallback | flagMHPort, cipvs.Tunnel, 32, cipvs.INET},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := service(tc.key, tc.flags)
			if s.Scheduler != "mh" || s.Flags != tc.wantFlags || s.Family != tc.wantFam || s.Netmask.Bits() != tc.wantBits ||
				s.Port != tc.key.Port || s.Protocol != cipvs.Protocol(tc.key.Proto) || s.Address != tc.key.Addr {
				t.Errorf("service %+v (netmask bits %d), want mh, flags %v, family %v, /%d", s, s.Netmask.Bits(), tc.wantFlags, tc.wantFam, tc.wantBits)
			}
			b := netip.MustParseAddr(tc.backend)
			d := destination(tc.key, tc.flags, lb.Backend{ID: 7, Addr: b, Weight: 3})
			if d.FwdMethod != tc.wantFwd || d.Weight != 3 || d.Port != tc.key.Port || d.Address != b || d.Family != family(b) || d.TunnelType != cipvs.IPIP {
				t.Errorf("destination %+v, want %v weight 3 to %s:%d", d, tc.wantFwd, b, tc.key.Port)
			}
		})
	}
}
