package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Sentinel errors of the model.
var (
	ErrBadProto = errors.New("unknown protocol")
	ErrInvalid  = errors.New("invalid vip")
	ErrFamily   = errors.New("backend family cannot carry the vip's family")
	ErrRingSize = errors.New("bad ring size")
)

// Proto is an L4 protocol number.
type Proto uint8

// The protocols a VIP can carry.
const (
	ProtoTCP Proto = 6
	ProtoUDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ParseProto parses "tcp" or "udp" (any case).
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	}
	return 0, fmt.Errorf("%q: %w (want tcp or udp)", s, ErrBadProto)
}

// VIPKey identifies a VIP. Port 0 means any port.
type VIPKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
}

func (k VIPKey) String() string {
	port := "*"
	if k.Port != 0 {
		port = fmt.Sprint(k.Port)
	}
	if k.Addr.Is6() && !k.Addr.Is4In6() {
		return fmt.Sprintf("[%s]:%s/%s", k.Addr, port, k.Proto)
	}
	return fmt.Sprintf("%s:%s/%s", k.Addr, port, k.Proto)
}

// VIPFlags change how a VIP hashes its flows.
type VIPFlags uint32

// FlagHashNoSourcePort hashes flows without the client's source port, so all of one
// client's connections go to the same backend.
const FlagHashNoSourcePort VIPFlags = 1 << 0

// FlagForwardMasq: the data plane NATs new flows to the backend (IPVS masq) instead of
// encapsulating them (IPIP, the default). Only the IPVS data plane reads it.
const FlagForwardMasq VIPFlags = 1 << 1

// Backend is one real server. ID is chosen by the control plane, is never 0, and stays the
// same for the same backend across reloads and restarts: the data plane's conntrack
// stores it. Weight 0 drains the backend (no new flows; established flows stay).
type Backend struct {
	ID     uint32
	Addr   netip.Addr
	Weight uint32
}

// VIP is a virtual service and its backends.
type VIP struct {
	Key      VIPKey
	Flags    VIPFlags
	Backends []Backend
	// RingSize is the VIP's Maglev ring size (a prime); 0: the data plane's default.
	RingSize uint32
}

// Validate checks what the data plane relies on.
func (v VIP) Validate() error {
	if !v.Key.Addr.IsValid() {
		return fmt.Errorf("vip %s: address missing: %w", v.Key, ErrInvalid)
	}
	if v.Key.Proto != ProtoTCP && v.Key.Proto != ProtoUDP {
		return fmt.Errorf("vip %s: protocol %d: %w", v.Key, uint8(v.Key.Proto), ErrBadProto)
	}
	if len(v.Backends) == 0 {
		return fmt.Errorf("vip %s: no backends: %w", v.Key, ErrInvalid)
	}
	vip6 := v.Key.Addr.Is6() && !v.Key.Addr.Is4In6()
	ids := make(map[uint32]bool, len(v.Backends))
	addrs := make(map[netip.Addr]bool, len(v.Backends))
	for _, b := range v.Backends {
		if b.ID == 0 {
			return fmt.Errorf("vip %s: backend %s: id 0 is reserved: %w", v.Key, b.Addr, ErrInvalid)
		}
		if !b.Addr.IsValid() {
			return fmt.Errorf("vip %s: backend %d: address missing: %w", v.Key, b.ID, ErrInvalid)
		}
		if ids[b.ID] {
			return fmt.Errorf("vip %s: backend id %d used twice: %w", v.Key, b.ID, ErrInvalid)
		}
		if addrs[b.Addr.Unmap()] {
			return fmt.Errorf("vip %s: backend %s listed twice: %w", v.Key, b.Addr, ErrInvalid)
		}
		ids[b.ID], addrs[b.Addr.Unmap()] = true, true
		if vip6 && b.Addr.Unmap().Is4() {
			return fmt.Errorf("vip %s: backend %s: ipv6 cannot be encapsulated to an ipv4 backend: %w", v.Key, b.Addr, ErrFamily)
		}
	}
	return nil
}
