package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var a = netip.MustParseAddr

func u(n uint32) *uint32 { return &n }

func testSpec() Spec {
	return Spec{Services: []Service{
		{Name: "web", Key: VIPKey{Addr: a("203.0.113.10"), Port: 80, Proto: ProtoTCP}, Backends: []ServiceBackend{
			{Addr: a("198.51.100.11"), Weight: 1}, {Addr: a("198.51.100.12"), Weight: 3}, {Addr: a("198.51.100.13"), Weight: 0}}},
		{Name: "dns", Key: VIPKey{Addr: a("203.0.113.10"), Port: 53, Proto: ProtoUDP}, Flags: FlagHashNoSourcePort, Backends: []ServiceBackend{
			{Addr: a("198.51.100.11"), Weight: 1}}},
	}}
}

func weights(st State) map[string]uint32 {
	out := map[string]uint32{}
	for _, v := range st.VIPs {
		for _, b := range v.Backends {
			out[fmt.Sprintf("%s/%s", v.Name, b.Addr)] = b.Weight
		}
	}
	return out
}

func TestDesired(t *testing.T) {
	ids := map[netip.Addr]uint32{a("198.51.100.11"): 1, a("198.51.100.12"): 2, a("198.51.100.13"): 3}
	web11 := BackendKey{VIP: "web", Backend: a("198.51.100.11")}
	web12 := BackendKey{VIP: "web", Backend: a("198.51.100.12")}
	dns11 := BackendKey{VIP: "dns", Backend: a("198.51.100.11")}
	for _, tc := range []struct {
		name   string
		ov     Overrides
		health map[BackendKey]bool
		want   map[string]uint32
		up     map[string]bool
	}{
		{"config weights; 0 drains", nil, nil,
			map[string]uint32{"web/198.51.100.11": 1, "web/198.51.100.12": 3, "web/198.51.100.13": 0, "dns/198.51.100.11": 1},
			map[string]bool{"web": true, "dns": true}},
		{"unhealthy backend gets weight 0", nil, map[BackendKey]bool{web12: false},
			map[string]uint32{"web/198.51.100.11": 1, "web/198.51.100.12": 0, "web/198.51.100.13": 0, "dns/198.51.100.11": 1},
			map[string]bool{"web": true, "dns": true}},
		{"health is per vip", nil, map[BackendKey]bool{dns11: false},
			map[string]uint32{"web/198.51.100.11": 1, "web/198.51.100.12": 3, "web/198.51.100.13": 0, "dns/198.51.100.11": 0},
			map[string]bool{"web": true, "dns": false}},
		{"override weight and drain", Overrides{web11: {Weight: u(7)}, web12: {Drain: true}}, nil,
			map[string]uint32{"web/198.51.100.11": 7, "web/198.51.100.12": 0, "web/198.51.100.13": 0, "dns/198.51.100.11": 1},
			map[string]bool{"web": true, "dns": true}},
		{"all down: vip is down", Overrides{web11: {Drain: true}}, map[BackendKey]bool{web12: false},
			map[string]uint32{"web/198.51.100.11": 0, "web/198.51.100.12": 0, "web/198.51.100.13": 0, "dns/198.51.100.11": 1},
			map[string]bool{"web": false, "dns": true}},
		{"healthy again", nil, map[BackendKey]bool{web12: true},
			map[string]uint32{"web/198.51.100.11": 1, "web/198.51.100.12": 3, "web/198.51.100.13": 0, "dns/198.51.100.11": 1},
			map[string]bool{"web": true, "dns": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Desired(testSpec(), tc.ov, tc.health, ids)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, weights(st)); diff != "" {
				t.Errorf("weights (-want +got):\n%s", diff)
			}
			up := map[string]bool{}
			for _, v := range st.VIPs {
				up[v.Name] = v.Up
				if v.Name == "dns" && v.VIP.Flags != FlagHashNoSourcePort {
					t.Errorf("dns flags %v", v.VIP.Flags)
				}
			}
			if diff := cmp.Diff(tc.up, up); diff != "" {
				t.Errorf("vip up (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := Desired(testSpec(), nil, nil, map[netip.Addr]uint32{}); err == nil {
		t.Error("missing ids accepted")
	}
}

func TestAssignIDs(t *testing.T) {
	have := map[netip.Addr]uint32{a("198.51.100.11"): 5, a("198.51.100.99"): 1}
	got, err := AssignIDs(have, []netip.Addr{a("198.51.100.13"), a("198.51.100.11"), a("198.51.100.12")}, 10)
	if err != nil {
		t.Fatal(err)
	}
	// Existing ids are kept. 198.51.100.99 is being removed, but its id 1 is not handed
	// out in the same pass: its entry is deleted only after the new rings are in place.
	want := map[netip.Addr]uint32{a("198.51.100.11"): 5, a("198.51.100.12"): 2, a("198.51.100.13"): 3}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	if _, err := AssignIDs(nil, []netip.Addr{a("198.51.100.1"), a("198.51.100.2")}, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("over capacity: %v", err)
	}
	// Once the removed backend is gone from the data plane, its id is free again.
	got, err = AssignIDs(map[netip.Addr]uint32{a("198.51.100.11"): 5}, []netip.Addr{a("198.51.100.12"), a("198.51.100.11")}, 10)
	if err != nil || got[a("198.51.100.12")] != 1 {
		t.Errorf("freed id not reused in the next pass: %v %v", got, err)
	}
}

// memDataplane records calls in order; the real data plane is tested in pkg/lb/xdp and
// through the daemon.
type memDataplane struct {
	mu       sync.Mutex // SetVIP runs concurrently
	calls    []string
	vips     map[VIPKey]VIP
	backends map[uint32]netip.Addr
	fail     error
}

func newMem() *memDataplane {
	return &memDataplane{vips: map[VIPKey]VIP{}, backends: map[uint32]netip.Addr{}}
}

func (m *memDataplane) SetVIP(v VIP) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.calls = append(m.calls, "set "+v.Key.String())
	for _, b := range v.Backends {
		m.backends[b.ID] = b.Addr
	}
	m.vips[v.Key] = v
	return nil
}
func (m *memDataplane) DeleteVIP(k VIPKey) error {
	m.calls = append(m.calls, "delete "+k.String())
	delete(m.vips, k)
	return nil
}
func (m *memDataplane) DeleteBackend(id uint32) error {
	m.calls = append(m.calls, fmt.Sprintf("delete backend %d", id))
	delete(m.backends, id)
	return nil
}
func (m *memDataplane) Programmed() (Programmed, error) {
	p := Programmed{VIPs: map[VIPKey]ProgrammedVIP{}, Backends: map[uint32]netip.Addr{}}
	for k, v := range m.vips {
		p.VIPs[k] = ProgrammedVIP{Flags: v.Flags, Ready: true}
	}
	for k, v := range m.backends {
		p.Backends[k] = v
	}
	return p, nil
}

type recAnnouncer struct {
	dp    *memDataplane
	calls [][]string
}

func (r *recAnnouncer) Announce(_ context.Context, vs []VIPState) error {
	var names []string
	for _, v := range vs {
		names = append(names, v.Name)
	}
	r.calls = append(r.calls, names)
	r.dp.calls = append(r.dp.calls, fmt.Sprintf("announce %v", names))
	return nil
}

func TestControllerOrderAndSkips(t *testing.T) {
	dp := newMem()
	ann := &recAnnouncer{dp: dp}
	c := NewController(slog.New(slog.NewTextHandler(io.Discard, nil)), dp, 4095, ann, nil)
	ctx := context.Background()
	c.SetSpec(testSpec())
	if res := c.Apply(ctx); res.Err != nil || !res.Changed {
		t.Fatalf("first pass: %+v", res)
	}
	want := []string{"set 203.0.113.10:53/udp", "set 203.0.113.10:80/tcp", "announce [dns web]"}
	if diff := cmp.Diff(want, sortedRuns(dp.calls)); diff != "" {
		t.Errorf("first pass calls (-want +got):\n%s", diff)
	}
	dp.calls = nil
	if res := c.Apply(ctx); res.Err != nil || res.Changed || len(dp.calls) != 0 {
		t.Errorf("a pass with nothing to do changed things: %+v %v", res, dp.calls)
	}

	// A health change rewrites only the VIP it touches.
	c.SetHealth(BackendKey{VIP: "web", Backend: a("198.51.100.12")}, false)
	c.Apply(ctx)
	if diff := cmp.Diff([]string{"set 203.0.113.10:80/tcp", "announce [dns web]"}, dp.calls); diff != "" {
		t.Errorf("health pass calls (-want +got):\n%s", diff)
	}
	dp.calls = nil

	// Removing a VIP: withdraw first, then delete, then free its backends.
	spec := testSpec()
	spec.Services = spec.Services[1:]
	c.SetSpec(spec)
	c.Apply(ctx)
	want = []string{"announce [dns]", "delete 203.0.113.10:80/tcp", "delete backend 2", "delete backend 3", "announce [dns]"}
	if diff := cmp.Diff(want, sortedRuns(dp.calls)); diff != "" {
		t.Errorf("removal calls (-want +got):\n%s", diff)
	}

	// Failures are reported and nothing is recorded as applied.
	dp.fail = errors.New("boom")
	c.SetSpec(testSpec())
	if res := c.Apply(ctx); res.Err == nil {
		t.Error("failing data plane: no error")
	}
	if s := c.Snapshot(); len(s.State.VIPs) != 1 || s.Last.Err == nil {
		t.Errorf("after a failed pass the state is %d vips, last %+v", len(s.State.VIPs), s.Last)
	}
}

// sortedRuns sorts each run of consecutive calls of one kind ("set", "delete backend"):
// VIPs are written concurrently and backends deleted in map order, so only the order
// between kinds is defined.
func sortedRuns(calls []string) []string {
	kind := func(c string) string {
		if strings.HasPrefix(c, "delete backend") {
			return "delete backend"
		}
		return strings.SplitN(c, " ", 2)[0]
	}
	out := append([]string(nil), calls...)
	for i := 0; i < len(out); {
		j := i
		for j < len(out) && kind(out[j]) == kind(out[i]) && kind(out[i]) != "announce" {
			j++
		}
		if j == i {
			j = i + 1
		}
		sort.Strings(out[i:j])
		i = j
	}
	return out
}

func TestControllerReannounce(t *testing.T) {
	dp := newMem()
	ann := &recAnnouncer{dp: dp}
	c := NewController(slog.New(slog.NewTextHandler(io.Discard, nil)), dp, 4095, ann, nil)
	ctx := context.Background()
	c.SetSpec(testSpec())
	c.Apply(ctx)
	dp.calls = nil
	c.Reannounce()
	if res := c.Apply(ctx); res.Err != nil || res.Changed {
		t.Fatalf("reannounce pass: %+v", res)
	}
	if diff := cmp.Diff([]string{"announce [dns web]"}, dp.calls); diff != "" {
		t.Errorf("reannounce pass calls (-want +got):\n%s", diff)
	}
	dp.calls = nil
	if c.Apply(ctx); len(dp.calls) != 0 {
		t.Errorf("the pass after a reannounce did something: %v", dp.calls)
	}
}
