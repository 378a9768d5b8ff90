package xdp

import (
	"net/netip"

	"github.com/l4lb/l4lb/internal/bpfobj"
)

const (
	familyV4 = bpfobj.FamilyV4
	familyV6 = bpfobj.FamilyV6
)

// addrFrom16 is the inverse of bpfobj.Addr16.
func addrFrom16(b [16]uint8, family uint8) netip.Addr {
	if family == familyV4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// htons converts a port to the network-order uint16 the maps hold (bpfel target).
func htons(p uint16) uint16 { return p<<8 | p>>8 }
