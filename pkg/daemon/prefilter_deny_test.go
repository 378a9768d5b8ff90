package daemon

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/admin"
)

const denyVIPs = `state_file: STATE
vips:
  - name: web
    address: 203.0.113.10
    port: 80
    protocol: tcp
    backends: [{address: 198.51.100.11}]
`

// A deny prefix that covers a BGP peer, a backend or the requesting client is refused,
// naming what it covers, and changes nothing (the state file included); forced, it is
// added.
func TestDenyAddRefusesCovered(t *testing.T) {
	n := startTestNode(t, testConfig+`bgp:
  enabled: true
  local_asn: 65010
  router_id: 192.0.2.2
  peers: [{address: 192.0.2.1, asn: 65000}]
`+denyVIPs+`  - name: dns
    address: 203.0.113.10
    port: 53
    protocol: udp
    backends: [{address: 198.51.100.11}]
`)
	client := netip.MustParseAddr("203.0.113.77")
	for _, tc := range []struct {
		prefixes []string
		want     string
	}{
		{[]string{"192.0.2.0/30"}, "192.0.2.0/30 covers bgp peer 192.0.2.1"},
		{[]string{"203.0.113.200/29", "198.51.100.0/24"}, "198.51.100.0/24 covers backend 198.51.100.11 (vips web, dns)"},
		{[]string{"203.0.113.64/26"}, "203.0.113.64/26 covers the admin api's client 203.0.113.77 (this request)"},
		{[]string{"0.0.0.0/0"}, "0.0.0.0/0 covers bgp peer 192.0.2.1, backend 198.51.100.11 (vips web, dns), the admin api's client 203.0.113.77"},
	} {
		var ps []netip.Prefix
		for _, s := range tc.prefixes {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		err := n.DenyAdd(ps, admin.DenyOptions{Client: client})
		if !errors.Is(err, admin.ErrConflict) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--force") {
			t.Errorf("deny add %v: %v, want a conflict saying %q and how to force it", tc.prefixes, err, tc.want)
		}
		if got := n.dp.listed(); len(got) != 0 {
			t.Errorf("deny add %v refused, yet the deny list is %v", tc.prefixes, got)
		}
		if saved, _ := loadDeny(n.cfg.StateFile); len(saved) != 0 {
			t.Errorf("deny add %v refused, yet the state file has %v", tc.prefixes, saved)
		}
	}
	if err := n.DenyAdd([]netip.Prefix{netip.MustParsePrefix("203.0.113.200/29")}, admin.DenyOptions{Client: client}); err != nil {
		t.Errorf("a prefix that covers nothing: %v", err)
	}
	if err := n.DenyAdd([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, admin.DenyOptions{Client: client, Force: true}); err != nil {
		t.Errorf("forced: %v", err)
	}
	if diff := cmp.Diff([]string{"198.51.100.0/24", "203.0.113.200/29"}, n.dp.listed()); diff != "" {
		t.Errorf("deny list (-want +got):\n%s", diff)
	}
}
