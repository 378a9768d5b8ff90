package lb

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Sentinel errors of the spec's look-ups.
var (
	ErrNoVIP     = errors.New("no such vip")
	ErrNoBackend = errors.New("no such backend")
)

// Spec is the configured part of the desired state: the services and their backends as
// the operator wrote them, already validated and translated from the configuration file
// (which this package does not know).
type Spec struct {
	Services []Service
}

// Service is one configured VIP.
type Service struct {
	Name        string
	Key         VIPKey
	Flags       VIPFlags
	Backends    []ServiceBackend
	Communities []string // BGP communities announced with the VIP (global ones included)
	MED         uint32
	// RingSize is the VIP's own Maglev ring size; 0: the data plane's default.
	RingSize uint32
}

// ServiceBackend is a configured backend of a service and its configured weight.
type ServiceBackend struct {
	Addr   netip.Addr
	Weight uint32
}

// BackendKey names one backend of one VIP (by the VIP's configured name).
type BackendKey struct {
	VIP     string
	Backend netip.Addr
}

func (k BackendKey) String() string { return k.VIP + "/" + k.Backend.String() }

// ParseBackendKey parses BackendKey.String's output.
func ParseBackendKey(s string) (BackendKey, error) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 {
		return BackendKey{}, fmt.Errorf("backend key %q: want VIP/ADDRESS", s)
	}
	a, err := netip.ParseAddr(s[i+1:])
	if err != nil {
		return BackendKey{}, fmt.Errorf("backend key %q: %w", s, err)
	}
	return BackendKey{VIP: s[:i], Backend: a.Unmap()}, nil
}

// Has reports whether k names a configured backend.
func (s Spec) Has(k BackendKey) bool {
	for _, sv := range s.Services {
		if sv.Name != k.VIP {
			continue
		}
		for _, b := range sv.Backends {
			if b.Addr == k.Backend {
				return true
			}
		}
	}
	return false
}

// Find resolves a VIP (by name or by its key's string, e.g. "203.0.113.10:80/tcp") and a
// backend address to the backend's key.
func (s Spec) Find(vip string, backend netip.Addr) (BackendKey, error) {
	backend = backend.Unmap()
	for _, sv := range s.Services {
		if sv.Name != vip && sv.Key.String() != vip {
			continue
		}
		for _, b := range sv.Backends {
			if b.Addr == backend {
				return BackendKey{VIP: sv.Name, Backend: backend}, nil
			}
		}
		return BackendKey{}, fmt.Errorf("vip %s has no backend %s: %w", vip, backend, ErrNoBackend)
	}
	return BackendKey{}, fmt.Errorf("%q: %w", vip, ErrNoVIP)
}

// Addrs lists every backend address of the spec, sorted, once each.
func (s Spec) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, sv := range s.Services {
		for _, b := range sv.Backends {
			out = append(out, b.Addr.Unmap())
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}
