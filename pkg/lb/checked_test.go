package lb_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/memdp"
)

// A backend whose health check goes away is up: the down it last reported is forgotten,
// and a late report from the stopping check is ignored; a check added again counts.
func TestControllerUncheckedBackendIsUp(t *testing.T) {
	vip := lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.ProtoTCP}
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	ka, kb := lb.BackendKey{VIP: "web", Backend: a}, lb.BackendKey{VIP: "web", Backend: b}
	dp := memdp.New(propRing, propMaxID)
	c := newTestController(dp)
	ctx := context.Background()
	c.SetSpec(lb.Spec{Services: []lb.Service{{Name: "web", Key: vip, Backends: []lb.ServiceBackend{{Addr: a, Weight: 1}, {Addr: b, Weight: 1}}}}})
	c.SetChecked(map[lb.BackendKey]bool{ka: true, kb: true})
	weight := func(k lb.BackendKey) uint32 {
		t.Helper()
		if res := c.Apply(ctx); res.Err != nil {
			t.Fatal(res.Err)
		}
		for _, vs := range c.Snapshot().State.VIPs {
			for _, bs := range vs.Backends {
				if bs.Addr == k.Backend {
					return bs.Weight
				}
			}
		}
		t.Fatalf("no backend %s", k)
		return 0
	}
	c.SetHealth(kb, false)
	if w := weight(kb); w != 0 {
		t.Fatalf("b down: weight %d", w)
	}
	c.SetChecked(map[lb.BackendKey]bool{ka: true})
	if w := weight(kb); w != 1 {
		t.Errorf("b without a check: weight %d, want 1", w)
	}
	if c.SetHealth(kb, false) {
		t.Error("a report for a backend without a check was taken")
	}
	if w := weight(kb); w != 1 {
		t.Errorf("b after a late report: weight %d, want 1", w)
	}
	c.SetChecked(map[lb.BackendKey]bool{ka: true, kb: true})
	if !c.SetHealth(kb, false) {
		t.Error("a report for a backend checked again was ignored")
	}
	if w := weight(kb); w != 0 {
		t.Errorf("b checked again and down: weight %d, want 0", w)
	}
}
