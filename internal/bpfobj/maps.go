package bpfobj

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/internal/limits"
)

// Address families as the maps hold them: FAMILY_V4 and FAMILY_V6 of bpf/lb_consts.h.
const (
	FamilyV4 = limits.FamilyV4
	FamilyV6 = limits.FamilyV6
)

// Addr16 lays an address out as the BPF maps do: IPv4 in the first four bytes.
func Addr16(a netip.Addr) (out [16]uint8, family uint8) {
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		copy(out[:], b[:])
		return out, FamilyV4
	}
	return a.As16(), FamilyV6
}

// SumCounters reads the per-CPU array m, one counter per index named by names, each
// summed over CPUs.
func SumCounters(m *ebpf.Map, names []string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(names))
	for i, name := range names {
		var per []uint64
		if err := m.Lookup(uint32(i), &per); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}
