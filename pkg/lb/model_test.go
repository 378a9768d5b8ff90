package lb

import (
	"errors"
	"net/netip"
	"testing"
)

func TestVIPValidate(t *testing.T) {
	a := netip.MustParseAddr
	v4 := VIPKey{Addr: a("203.0.113.10"), Port: 80, Proto: ProtoTCP}
	v6 := VIPKey{Addr: a("2001:db8:f::10"), Port: 80, Proto: ProtoTCP}
	be := func(id uint32, addr string) Backend { return Backend{ID: id, Addr: a(addr), Weight: 1} }
	for _, tc := range []struct {
		name string
		vip  VIP
		want error
	}{
		{"ok v4", VIP{Key: v4, Backends: []Backend{be(1, "198.51.100.1"), be(2, "198.51.100.2")}}, nil},
		{"ok v4 vip with v6 backend (4in6)", VIP{Key: v4, Backends: []Backend{be(1, "2001:db8:b::1")}}, nil},
		{"ok v6", VIP{Key: v6, Backends: []Backend{be(1, "2001:db8:b::1")}}, nil},
		{"ok drained", VIP{Key: v4, Backends: []Backend{{ID: 1, Addr: a("198.51.100.1")}}}, nil},
		{"no address", VIP{Key: VIPKey{Port: 80, Proto: ProtoTCP}, Backends: []Backend{be(1, "198.51.100.1")}}, ErrInvalid},
		{"bad protocol", VIP{Key: VIPKey{Addr: a("203.0.113.10"), Proto: 1}, Backends: []Backend{be(1, "198.51.100.1")}}, ErrBadProto},
		{"no backends", VIP{Key: v4}, ErrInvalid},
		{"backend id 0", VIP{Key: v4, Backends: []Backend{be(0, "198.51.100.1")}}, ErrInvalid},
		{"backend without address", VIP{Key: v4, Backends: []Backend{{ID: 1, Weight: 1}}}, ErrInvalid},
		{"duplicate id", VIP{Key: v4, Backends: []Backend{be(1, "198.51.100.1"), be(1, "198.51.100.2")}}, ErrInvalid},
		{"duplicate address", VIP{Key: v4, Backends: []Backend{be(1, "198.51.100.1"), be(2, "198.51.100.1")}}, ErrInvalid},
		{"v6 vip with v4 backend", VIP{Key: v6, Backends: []Backend{be(1, "198.51.100.1")}}, ErrFamily},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.vip.Validate()
			if tc.want == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVIPKeyAndProto(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		k    VIPKey
		want string
	}{
		{VIPKey{Addr: a("203.0.113.10"), Port: 80, Proto: ProtoTCP}, "203.0.113.10:80/tcp"},
		{VIPKey{Addr: a("2001:db8::1"), Port: 443, Proto: ProtoUDP}, "[2001:db8::1]:443/udp"},
		{VIPKey{Addr: a("203.0.113.10"), Proto: ProtoTCP}, "203.0.113.10:*/tcp"},
	} {
		if got := tc.k.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
	for in, want := range map[string]Proto{"tcp": ProtoTCP, "UDP": ProtoUDP} {
		if got, err := ParseProto(in); err != nil || got != want {
			t.Errorf("ParseProto(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseProto("sctp"); !errors.Is(err, ErrBadProto) {
		t.Errorf("ParseProto(sctp) error %v, want ErrBadProto", err)
	}
}
