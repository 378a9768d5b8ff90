package xdp

import (
	"net/netip"
)

const (
	familyV4 = 4
	familyV6 = 6
)

// addr16 lays an address out as the BPF maps do: IPv4 in the first four bytes.
func addr16(a netip.Addr) (out [16]uint8, family uint8) {
	if a.Is4() || a.Is4In6() {
		b := a.Unmap().As4()
		copy(out[:], b[:])
		return out, familyV4
	}
	return a.As16(), familyV6
}

// addrFrom16 is the inverse of addr16.
func addrFrom16(b [16]uint8, family uint8) netip.Addr {
	if family == familyV4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

// htons converts a port to the network-order uint16 the maps hold (bpfel target).
func htons(p uint16) uint16 { return p<<8 | p>>8 }
