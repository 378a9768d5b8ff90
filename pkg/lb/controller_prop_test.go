package lb_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/memdp"
)

const (
	propRing  = 251
	propMaxID = 4095
)

// propRingSizes are the per-VIP ring sizes services get (0: the data plane's default).
var propRingSizes = []uint32{0, 0, 257, 263}

// world is the test's own account of what the operator configured, what the health checks
// say and what the operators overrode: the oracle the controller is checked against.
type world struct {
	spec   lb.Spec
	down   map[lb.BackendKey]bool // what the prober says: missing = up
	ov     lb.Overrides
	pool4  []netip.Addr
	pool6  []netip.Addr
	rng    *rand.Rand
	serial int
}

func newWorld(seed uint64) *world {
	w := &world{down: map[lb.BackendKey]bool{}, ov: lb.Overrides{}, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for i := 1; i <= 10; i++ {
		w.pool4 = append(w.pool4, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
		w.pool6 = append(w.pool6, netip.MustParseAddr(fmt.Sprintf("2001:db8:b::%x", i)))
	}
	return w
}

func (w *world) pool(sv lb.Service) []netip.Addr {
	if sv.Key.Addr.Is6() {
		return w.pool6
	}
	return w.pool4
}

func (w *world) newService() lb.Service {
	w.serial++
	sv := lb.Service{Name: fmt.Sprintf("vip%d", w.serial)}
	port := uint16(1000 + w.serial)
	switch w.rng.IntN(3) {
	case 0:
		sv.Key = lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: port, Proto: lb.ProtoTCP}
	case 1:
		sv.Key = lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.11"), Port: port, Proto: lb.ProtoUDP}
		sv.Flags = lb.FlagHashNoSourcePort
	default:
		sv.Key = lb.VIPKey{Addr: netip.MustParseAddr("2001:db8:f::10"), Port: port, Proto: lb.ProtoTCP}
	}
	for n := 1 + w.rng.IntN(4); len(sv.Backends) < n; {
		w.addBackend(&sv)
	}
	sv.RingSize = propRingSizes[w.rng.IntN(len(propRingSizes))]
	return sv
}

func (w *world) addBackend(sv *lb.Service) bool {
	var free []netip.Addr
	for _, a := range w.pool(*sv) {
		if !slices.ContainsFunc(sv.Backends, func(b lb.ServiceBackend) bool { return b.Addr == a }) {
			free = append(free, a)
		}
	}
	if len(free) == 0 {
		return false
	}
	sv.Backends = append(sv.Backends, lb.ServiceBackend{Addr: free[w.rng.IntN(len(free))], Weight: uint32(1 + w.rng.IntN(4))})
	return true
}

// forget drops what the prober knows of backends the spec no longer lists: a removed
// health check stops, and one added again starts up.
func (w *world) forget() {
	for k := range w.down {
		if !w.spec.Has(k) {
			delete(w.down, k)
		}
	}
}

func (w *world) randomKey() (lb.BackendKey, bool) {
	if len(w.spec.Services) == 0 {
		return lb.BackendKey{}, false
	}
	sv := w.spec.Services[w.rng.IntN(len(w.spec.Services))]
	b := sv.Backends[w.rng.IntN(len(sv.Backends))]
	return lb.BackendKey{VIP: sv.Name, Backend: b.Addr}, true
}

// step makes one random change and returns what it did, for failure messages.
func (w *world) step(c *lb.Controller) string {
	svcs := w.spec.Services
	pick := func() int { return w.rng.IntN(len(svcs)) }
	switch op := w.rng.IntN(10); {
	case op == 0 || len(svcs) == 0:
		if len(svcs) >= 6 {
			i := pick()
			name := svcs[i].Name
			w.spec.Services = slices.Delete(slices.Clone(svcs), i, i+1)
			w.forget()
			c.SetSpec(cloneSpec(w.spec))
			return "remove vip " + name
		}
		sv := w.newService()
		w.spec.Services = append(slices.Clone(svcs), sv)
		c.SetSpec(cloneSpec(w.spec))
		return "add vip " + sv.Name
	case op <= 3: // replace, add or remove a backend
		spec := cloneSpec(w.spec)
		i := pick()
		sv := &spec.Services[i]
		what := "replace"
		switch w.rng.IntN(3) {
		case 0:
			if !w.addBackend(sv) {
				return "no backend to add"
			}
			what = "add"
		case 1:
			if len(sv.Backends) < 2 {
				return "no backend to remove"
			}
			j := w.rng.IntN(len(sv.Backends))
			sv.Backends = slices.Delete(sv.Backends, j, j+1)
			what = "remove"
		default:
			j := w.rng.IntN(len(sv.Backends))
			old := sv.Backends[j]
			sv.Backends = slices.Delete(sv.Backends, j, j+1)
			if !w.addBackend(sv) {
				sv.Backends = append(sv.Backends, old)
				return "no backend to replace with"
			}
			what = "replace " + old.Addr.String() + " by " + sv.Backends[len(sv.Backends)-1].Addr.String()
		}
		w.spec = spec
		w.forget()
		c.SetSpec(cloneSpec(w.spec))
		return what + " in " + sv.Name
	case op == 4 && w.rng.IntN(3) == 0: // the VIP's own ring size
		spec := cloneSpec(w.spec)
		sv := &spec.Services[pick()]
		sv.RingSize = propRingSizes[w.rng.IntN(len(propRingSizes))]
		w.spec = spec
		c.SetSpec(cloneSpec(w.spec))
		return fmt.Sprintf("ring size %s = %d", sv.Name, sv.RingSize)
	case op == 4: // configured weight
		spec := cloneSpec(w.spec)
		sv := &spec.Services[pick()]
		j := w.rng.IntN(len(sv.Backends))
		sv.Backends[j].Weight = uint32(w.rng.IntN(5))
		w.spec = spec
		c.SetSpec(cloneSpec(w.spec))
		return fmt.Sprintf("weight %s/%s = %d", sv.Name, sv.Backends[j].Addr, sv.Backends[j].Weight)
	case op <= 6: // health flip
		k, _ := w.randomKey()
		up := w.down[k]
		if up {
			delete(w.down, k)
		} else {
			w.down[k] = true
		}
		c.SetHealth(k, up)
		return fmt.Sprintf("health %s up=%v", k, up)
	case op <= 8: // drain, undrain or override a weight
		k, _ := w.randomKey()
		var f func(*lb.Override)
		var what string
		switch w.rng.IntN(3) {
		case 0:
			d := !w.ov[k].Drain
			f, what = func(o *lb.Override) { o.Drain = d }, fmt.Sprintf("drain=%v", d)
		case 1:
			n := uint32(w.rng.IntN(4))
			f, what = func(o *lb.Override) { o.Weight = &n }, fmt.Sprintf("weight override %d", n)
		default:
			f, what = func(o *lb.Override) { o.Weight = nil }, "weight override cleared"
		}
		o, _, err := c.UpdateOverride(k, f, nil)
		if err != nil {
			panic(err)
		}
		if o == (lb.Override{}) {
			delete(w.ov, k)
		} else {
			w.ov[k] = o
		}
		return what + " " + k.String()
	default:
		return "restart"
	}
}

func cloneSpec(s lb.Spec) lb.Spec {
	out := lb.Spec{Services: slices.Clone(s.Services)}
	for i := range out.Services {
		out.Services[i].Backends = slices.Clone(out.Services[i].Backends)
	}
	return out
}

// wantWeight is the oracle: the weight a backend must have in its VIP's ring.
func (w *world) wantWeight(k lb.BackendKey, configured uint32) uint32 {
	o := w.ov[k]
	if w.down[k] || o.Drain {
		return 0
	}
	if o.Weight != nil {
		return *o.Weight
	}
	return configured
}

func newTestController(dp lb.Programmer) *lb.Controller {
	return lb.NewController(slog.New(slog.NewTextHandler(io.Discard, nil)), dp, propMaxID, nil, nil)
}

// TestControllerProperties runs random sequences of configuration changes (VIPs and
// backends added, removed and replaced; weights), health flips, drains, weight overrides,
// injected write failures and controller restarts against the in-memory data plane, and
// checks after every pass that the data plane holds exactly what the oracle says: no
// ring names a missing backend (at any moment, not only at the end of a pass), no backend
// is left that no VIP lists, every backend that is up, undrained and weighted is in its
// VIP's ring, and a second pass writes nothing.
func TestControllerProperties(t *testing.T) {
	sequences, steps := 400, 40
	if testing.Short() {
		sequences = 50
	}
	ctx := context.Background()
	for seq := range sequences {
		seed := uint64(seq) + 1
		w := newWorld(seed)
		dp := memdp.New(propRing, propMaxID)
		c := newTestController(dp)
		var history []string
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d after %v:\n%s", seed, history, fmt.Sprintf(format, args...))
		}
		for range steps {
			what := w.step(c)
			if what == "restart" {
				c = newTestController(dp)
				c.SetOverrides(w.ov)
				c.SetSpec(cloneSpec(w.spec))
				clear(w.down) // every health check starts up again
			}
			if w.rng.IntN(8) == 0 {
				n := 1 + w.rng.IntN(3)
				dp.FailNext(n)
				what += fmt.Sprintf(" (+%d failing writes)", n)
			}
			history = append(history, what)
			var res lb.ApplyResult
			for try := 0; try < 10; try++ {
				if res = c.Apply(ctx); res.Err == nil {
					break
				}
			}
			if res.Err != nil {
				fail("pass failed: %v", res.Err)
			}
			checkWorld(t, w, dp, c, fail)
			// Proportional apply: a health flip, drain or override of one VIP's backend
			// rewrites that VIP only.
			if perVIP := strings.HasPrefix(what, "health ") || strings.HasPrefix(what, "drain=") || strings.HasPrefix(what, "weight override"); perVIP && res.Written > 1 {
				fail("%q wrote %d vips, want at most 1", what, res.Written)
			}
			if t.Failed() {
				return
			}
			before := dp.Writes()
			if res := c.Apply(ctx); res.Err != nil || res.Changed || dp.Writes() != before {
				fail("second pass not idle: %+v, %d writes", res, dp.Writes()-before)
			}
		}
	}
}

func checkWorld(t *testing.T, w *world, dp *memdp.Dataplane, c *lb.Controller, fail func(string, ...any)) {
	t.Helper()
	if v := dp.Violations(); len(v) > 0 {
		fail("data plane invariant broken: %v", v)
	}
	have, _ := dp.Programmed()
	if len(have.VIPs) != len(w.spec.Services) {
		fail("data plane has %d vips, spec %d", len(have.VIPs), len(w.spec.Services))
	}
	listed := map[uint32]bool{}
	st := c.Snapshot().State
	byName := map[string]lb.VIPState{}
	for _, v := range st.VIPs {
		byName[v.Name] = v
	}
	for _, sv := range w.spec.Services {
		vs, ok := byName[sv.Name]
		if !ok {
			fail("vip %s missing from the applied state", sv.Name)
		}
		ring := dp.Ring(sv.Key)
		if ring == nil {
			fail("vip %s has no ring", sv.Name)
		}
		inRing := map[uint32]bool{}
		for _, id := range ring {
			inRing[id] = true
		}
		var backends []lb.Backend
		for _, b := range sv.Backends {
			k := lb.BackendKey{VIP: sv.Name, Backend: b.Addr}
			i := slices.IndexFunc(vs.Backends, func(bs lb.BackendState) bool { return bs.Addr == b.Addr })
			if i < 0 {
				fail("%s missing from the applied state", k)
			}
			got := vs.Backends[i]
			want := w.wantWeight(k, b.Weight)
			if got.Weight != want {
				fail("%s: weight %d, want %d (down=%v override=%+v)", k, got.Weight, want, w.down[k], w.ov[k])
			}
			if have.Backends[got.ID] != b.Addr {
				fail("%s: id %d holds %v in the data plane", k, got.ID, have.Backends[got.ID])
			}
			if want > 0 && !inRing[got.ID] {
				fail("%s: up, undrained, weight %d, but not in the ring", k, want)
			}
			listed[got.ID] = true
			backends = append(backends, got.Backend)
		}
		size := uint32(propRing)
		if sv.RingSize != 0 {
			size = sv.RingSize
		}
		wantRing, err := lb.MaglevTable(backends, size)
		if err != nil {
			fail("maglev: %v", err)
		}
		if diff := cmp.Diff(wantRing, ring); diff != "" {
			fail("vip %s ring differs from Maglev of its backends", sv.Name)
		}
	}
	for id, a := range have.Backends {
		if !listed[id] {
			fail("backend %d (%s) left in the data plane, listed by no vip", id, a)
		}
	}
}

// TestControllerReplaceBackend is the black hole the property test found first: A, B
// replaced by A, C in one change. C must not get B's id while B's entry is still to be
// deleted, and the pass after must find nothing to do.
func TestControllerReplaceBackend(t *testing.T) {
	vip := lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.ProtoTCP}
	spec := func(addrs ...string) lb.Spec {
		sv := lb.Service{Name: "web", Key: vip}
		for _, s := range addrs {
			sv.Backends = append(sv.Backends, lb.ServiceBackend{Addr: netip.MustParseAddr(s), Weight: 1})
		}
		return lb.Spec{Services: []lb.Service{sv}}
	}
	dp := memdp.New(propRing, propMaxID)
	c := newTestController(dp)
	ctx := context.Background()
	c.SetSpec(spec("198.51.100.1", "198.51.100.2"))
	if res := c.Apply(ctx); res.Err != nil {
		t.Fatal(res.Err)
	}
	c.SetSpec(spec("198.51.100.1", "198.51.100.3"))
	if res := c.Apply(ctx); res.Err != nil {
		t.Fatal(res.Err)
	}
	if v := dp.Violations(); len(v) > 0 {
		t.Fatalf("black hole: %v", v)
	}
	have, _ := dp.Programmed()
	want := map[uint32]netip.Addr{1: netip.MustParseAddr("198.51.100.1"), 3: netip.MustParseAddr("198.51.100.3")}
	if diff := cmp.Diff(want, have.Backends, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
		t.Errorf("backends (-want +got):\n%s", diff)
	}
	// A backend entry lost behind the controller's back is noticed and rewritten.
	dp.Corrupt(3)
	if res := c.Apply(ctx); res.Err != nil || !res.Changed {
		t.Errorf("lost backend entry not rewritten: %+v", res)
	}
	if have, _ := dp.Programmed(); have.Backends[3] != netip.MustParseAddr("198.51.100.3") {
		t.Errorf("backend 3 after repair: %v", have.Backends[3])
	}
}

// TestControllerReaddedBackendServes: a backend that went down, was removed and was added
// back serves again (its health check restarts up, and so does the controller's record).
func TestControllerReaddedBackendServes(t *testing.T) {
	vip := lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.ProtoTCP}
	a, b := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2")
	withB := lb.Spec{Services: []lb.Service{{Name: "web", Key: vip, Backends: []lb.ServiceBackend{{Addr: a, Weight: 1}, {Addr: b, Weight: 1}}}}}
	withoutB := lb.Spec{Services: []lb.Service{{Name: "web", Key: vip, Backends: []lb.ServiceBackend{{Addr: a, Weight: 1}}}}}
	dp := memdp.New(propRing, propMaxID)
	c := newTestController(dp)
	ctx := context.Background()
	c.SetSpec(withB)
	kb := lb.BackendKey{VIP: "web", Backend: b}
	c.SetHealth(kb, false)
	c.Apply(ctx)
	c.SetSpec(withoutB)
	c.Apply(ctx)
	if c.SetHealth(kb, false) {
		t.Error("a late report for a removed backend was recorded")
	}
	c.SetSpec(withB)
	if res := c.Apply(ctx); res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, bs := range c.Snapshot().State.VIPs[0].Backends {
		if bs.Addr == b && bs.Weight == 0 {
			t.Errorf("re-added backend has weight 0 (healthy=%v)", bs.Healthy)
		}
	}
}

// WaitApplied returns once a pass that includes the change has been applied, not before,
// so `l4lb drain` can answer when the backend gets no new flows.
func TestControllerWaitApplied(t *testing.T) {
	vip := lb.VIPKey{Addr: netip.MustParseAddr("203.0.113.10"), Port: 80, Proto: lb.ProtoTCP}
	a := netip.MustParseAddr("198.51.100.1")
	dp := memdp.New(propRing, propMaxID)
	c := newTestController(dp)
	c.SetSpec(lb.Spec{Services: []lb.Service{{Name: "web", Key: vip, Backends: []lb.ServiceBackend{{Addr: a, Weight: 1}}}}})
	ctx := context.Background()
	c.Apply(ctx)
	_, gen, err := c.UpdateOverride(lb.BackendKey{VIP: "web", Backend: a}, func(o *lb.Override) { o.Drain = true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c.WaitApplied(short, gen); err == nil {
		t.Fatal("WaitApplied returned before any pass")
	}
	dp.FailNext(1)
	c.Apply(ctx)
	short2, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if err := c.WaitApplied(short2, gen); err == nil {
		t.Fatal("WaitApplied returned after a failed pass")
	}
	done := make(chan error, 1)
	go func() { done <- c.WaitApplied(ctx, gen) }()
	c.Apply(ctx)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitApplied did not return after the pass")
	}
	if w := c.Snapshot().State.VIPs[0].Backends[0].Weight; w != 0 {
		t.Errorf("drained backend has weight %d once applied", w)
	}
}
