package lb

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"testing"
	"time"
)

// A backend id deleted in one pass is not given to another address in the next: an idle
// conntrack entry of the old backend's VIP (or a ring read in flight) may still name it.
// After the quarantine it may be.
func TestBackendIDQuarantine(t *testing.T) {
	dp := newMem()
	c := NewController(slog.New(slog.NewTextHandler(io.Discard, nil)), dp, 4095, nil, nil)
	clock := time.Unix(1_000_000, 0)
	c.now = func() time.Time { return clock }
	c.SetIDQuarantine(45 * time.Second)
	web := VIPKey{Addr: a("203.0.113.10"), Port: 80, Proto: ProtoTCP}
	api := VIPKey{Addr: a("203.0.113.20"), Port: 80, Proto: ProtoTCP}
	svc := func(name string, k VIPKey, addrs ...string) Service {
		s := Service{Name: name, Key: k}
		for _, ad := range addrs {
			s.Backends = append(s.Backends, ServiceBackend{Addr: a(ad), Weight: 1})
		}
		return s
	}
	apply := func(svcs ...Service) map[netip.Addr]uint32 {
		t.Helper()
		c.SetSpec(Spec{Services: svcs})
		if res := c.Apply(context.Background()); res.Err != nil {
			t.Fatal(res.Err)
		}
		ids := map[netip.Addr]uint32{}
		for _, v := range c.Snapshot().State.VIPs {
			for _, b := range v.Backends {
				ids[b.Addr] = b.ID
			}
		}
		return ids
	}
	if ids := apply(svc("web", web, "198.51.100.11")); ids[a("198.51.100.11")] != 1 {
		t.Fatalf("first backend got id %d", ids[a("198.51.100.11")])
	}
	// web's backend is replaced: 198.51.100.11 (id 1) is deleted at the end of the pass.
	apply(svc("web", web, "198.51.100.12"))
	clock = clock.Add(10 * time.Second)
	ids := apply(svc("web", web, "198.51.100.12"), svc("api", api, "198.51.100.99"))
	if ids[a("198.51.100.99")] == 1 {
		t.Errorf("id 1, deleted 10 s ago, given to api's new backend")
	}
	clock = clock.Add(time.Minute)
	ids = apply(svc("web", web, "198.51.100.12"), svc("api", api, "198.51.100.99", "198.51.100.98"))
	if ids[a("198.51.100.98")] != 1 {
		t.Errorf("after the quarantine, id 1 not reused: %v", ids)
	}
}

// With every other id taken, a quarantined id is handed out rather than refusing the
// configuration (the data plane still never follows an entry to another VIP's backend),
// the one freed longest ago first.
func TestAssignIDsQuarantineExhausted(t *testing.T) {
	t0 := time.Unix(1000, 0)
	q := map[uint32]FreedID{
		1: {Addr: a("198.51.100.91"), At: t0.Add(2 * time.Second)},
		2: {Addr: a("198.51.100.92"), At: t0},
	}
	got, err := AssignIDsAvoiding(nil, []netip.Addr{a("198.51.100.1")}, 2, q)
	if err != nil {
		t.Fatal(err)
	}
	if got[a("198.51.100.1")] != 2 {
		t.Errorf("ids %v, want the oldest quarantined id, 2", got)
	}
	got, err = AssignIDsAvoiding(nil, []netip.Addr{a("198.51.100.1"), a("198.51.100.2")}, 2, q)
	if err != nil {
		t.Fatal(err)
	}
	if got[a("198.51.100.1")]+got[a("198.51.100.2")] != 3 {
		t.Errorf("ids %v, want 1 and 2", got)
	}
	if _, err := AssignIDsAvoiding(nil, []netip.Addr{a("198.51.100.1"), a("198.51.100.2"), a("198.51.100.3")}, 2, q); err == nil {
		t.Error("three addresses in two ids: no error")
	}
}

// An address removed and added again within the quarantine gets its own id back: its
// conntrack entries are its own, and a flow idle meanwhile keeps its backend.
func TestAssignIDsGivesBackOwnID(t *testing.T) {
	q := map[uint32]FreedID{
		1: {Addr: a("198.51.100.5"), At: time.Unix(1000, 0)},
		3: {Addr: a("198.51.100.7"), At: time.Unix(1001, 0)},
	}
	got, err := AssignIDsAvoiding(map[netip.Addr]uint32{a("198.51.100.6"): 2},
		[]netip.Addr{a("198.51.100.6"), a("198.51.100.5"), a("198.51.100.8")}, 10, q)
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Addr]uint32{a("198.51.100.6"): 2, a("198.51.100.5"): 1, a("198.51.100.8"): 4}
	if !maps.Equal(got, want) {
		t.Errorf("ids %v, want %v (own id back; a new address skips 1-3)", got, want)
	}
}
