package xdp

import (
	"net/netip"
	"testing"
)

// A deleted backend id keeps its last address for naming (events of flows that left
// it) but is no longer a backend; given again, it names the new address.
func TestVipCacheNamesDeletedBackend(t *testing.T) {
	var c vipCache
	a, b := netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("198.51.100.12")
	c.setBackend(7, a)
	c.setBackend(7, netip.Addr{})
	if c.hasBackend(7, a) || c.backendAddr(7).IsValid() {
		t.Errorf("deleted backend 7 still present: %v", c.backendAddr(7))
	}
	if got := c.backendName(7); got != a {
		t.Errorf("name of deleted backend 7: %v, want %v", got, a)
	}
	c.setBackend(7, b)
	if got := c.backendName(7); got != b {
		t.Errorf("name of backend 7 given again: %v, want %v", got, b)
	}
	c.setBackends(map[uint32]netip.Addr{8: a})
	if got := c.backendName(9); got.IsValid() {
		t.Errorf("name of a never seen id: %v", got)
	}
}
