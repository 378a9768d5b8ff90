package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/lb"
)

// Removing a VIP's health block makes a backend that was down up again (no check: up),
// and a late report from the stopped check changes nothing.
func TestReloadHealthRemoved(t *testing.T) {
	const vips = `vips:
  - name: web
    address: 203.0.113.10
    port: 80
    protocol: tcp
    health: {type: tcp, interval: 1h}
    backends: [{address: 198.51.100.11}, {address: 198.51.100.12}]
`
	n := startTestNode(t, testConfig+vips)
	down := health.Transition{Key: lb.BackendKey{VIP: "web", Backend: netip.MustParseAddr("198.51.100.12")}.String(), Up: false}
	n.onHealth(down)
	n.apply(t)
	if b := n.backend(t, "web", "198.51.100.12"); b.Healthy || b.Weight != 0 {
		t.Fatalf("after its check failed: %+v, want down at weight 0", b)
	}

	if err := n.reload(t, testConfig+strings.Replace(vips, "    health: {type: tcp, interval: 1h}\n", "", 1)); err != nil {
		t.Fatal(err)
	}
	n.apply(t)
	if b := n.backend(t, "web", "198.51.100.12"); !b.Healthy || b.Weight != 1 {
		t.Errorf("after its check was removed: %+v, want up at weight 1", b)
	}
	n.onHealth(down) // from the check that was stopping
	n.apply(t)
	if b := n.backend(t, "web", "198.51.100.12"); !b.Healthy || b.Weight != 1 {
		t.Errorf("after a late report of the removed check: %+v, want up at weight 1", b)
	}
}
