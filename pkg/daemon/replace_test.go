package daemon_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/daemon"
)

// beAddr is each backend's address in the bed.
var beAddr = map[string]string{"be1": "203.0.113.18", "be2": "203.0.113.34", "be3": "203.0.113.50"}

// webVIP is the "vips:" list of a config with one VIP, web (http on port 80), on the
// named backends.
func webVIP(backends ...string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, `  - name: web
    address: %s
    port: 80
    protocol: tcp
    health: {type: http, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}
    backends:
`, vip)
	for _, be := range backends {
		fmt.Fprintf(&sb, "      - address: %s\n", beAddr[be])
	}
	return sb.String()
}

// view reads /v1/state without failing the test (for polling).
func (b *bed) view() (daemon.View, error) {
	code, out := b.admin("GET", "/v1/state", "")
	var v daemon.View
	if code != 200 {
		return v, fmt.Errorf("GET /v1/state: %d %s", code, out)
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return v, fmt.Errorf("GET /v1/state: %w", err)
	}
	return v, nil
}

// web returns the web VIP's backends by name (be1...), as the node shows them.
func web(v daemon.View) map[string]daemon.BackendView {
	out := map[string]daemon.BackendView{}
	for _, vv := range v.VIPs {
		if vv.Name != "web" {
			continue
		}
		for _, be := range vv.Backends {
			for name, a := range beAddr {
				if a == be.Address {
					out[name] = be
				}
			}
		}
	}
	return out
}

// describe prints the web VIP's backends and the drop counter that says "no backend".
func describe(v daemon.View) string {
	bs := web(v)
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(bs)) {
		be := bs[name]
		parts = append(parts, fmt.Sprintf("%s (%s) id %d weight %d healthy %v", name, be.Address, be.ID, be.Weight, be.Healthy))
	}
	return fmt.Sprintf("web backends [%s], drop_no_backend %d", strings.Join(parts, "; "), v.Counters["drop_no_backend"])
}

// waitState polls /v1/state until cond holds and returns the view and how long it took;
// it fails the test after timeout, saying what it waited for and what the node showed.
func (b *bed) waitState(t *testing.T, timeout time.Duration, what string, cond func(daemon.View) bool) (daemon.View, time.Duration) {
	t.Helper()
	start := time.Now()
	var v daemon.View
	var err error
	for time.Since(start) < timeout {
		if v, err = b.view(); err == nil && cond(v) {
			return v, time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: not within %s: %v", what, timeout, err)
	}
	t.Fatalf("%s: not within %s: %s", what, timeout, describe(v))
	return v, 0
}

// hasExactly is true when the web VIP's backends are exactly names.
func hasExactly(names ...string) func(daemon.View) bool {
	return func(v daemon.View) bool {
		return slices.Equal(slices.Sorted(maps.Keys(web(v))), slices.Sorted(slices.Values(names)))
	}
}

func allHealthy(v daemon.View) bool {
	bs := web(v)
	for _, be := range bs {
		if !be.Healthy || be.Weight == 0 {
			return false
		}
	}
	return len(bs) > 0
}

// Replacing a backend in one change (be1, be2 -> be1, be3) while clients open new
// connections the whole time: not one connection may fail, and once the change is
// applied only be1 and be3 answer, be3 included. be3 is new and takes the lowest free
// backend id, which is be2's, freed by the same change: the change must not remove the
// backend it has just written.
func TestPrivilegedReplaceBackend(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reload func(b *bed) error
	}{
		{"by SIGHUP", func(b *bed) error { return b.daemon.Process.Signal(syscall.SIGHUP) }},
		{"by POST /v1/reload", func(b *bed) error {
			if code, out := b.admin("POST", "/v1/reload", ""); code != 200 {
				return fmt.Errorf("POST /v1/reload: %d %s", code, out)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t)
			b.writeConfig(t, webVIP("be1", "be2"))
			b.startDaemon()
			v, _ := b.waitState(t, 5*time.Second, "be1 and be2 healthy", allHealthy)
			t.Logf("before: %s", describe(v))
			idsBefore := web(v)

			// Short-lived connections (one HTTP request each) from 4 clients, every 10ms
			// each, before, while and after the change applies.
			load := testutil.StartLoad(4, 10*time.Millisecond, b.get)
			stopped := false
			defer func() {
				if !stopped {
					load.Stop()
				}
			}()
			time.Sleep(time.Second) // traffic before the change

			b.writeConfig(t, webVIP("be1", "be3"))
			reloadAt := time.Now()
			if err := tc.reload(b); err != nil {
				t.Fatal(err)
			}
			v, took := b.waitState(t, 5*time.Second, "the reload applied (web on be1 and be3)", hasExactly("be1", "be3"))
			appliedAt := time.Now()
			t.Logf("reload -> applied in %s; after: %s", took.Round(time.Millisecond), describe(v))
			time.Sleep(2 * time.Second) // traffic after the change
			reqs := load.Stop()
			stopped = true

			testutil.CheckReplaced(t, reqs, reloadAt, appliedAt, "be1", "be2", "be3", func() string {
				final, _ := b.view()
				return fmt.Sprintf("be2 had id %d, be3 was given id %d; now %s", idsBefore["be2"].ID, web(v)["be3"].ID, describe(final))
			})
		})
	}
}

// A backend that went down, was removed from the config, and is added back once it
// works again must get its weight back and new connections, as a backend that was never
// there would.
func TestPrivilegedReaddDownBackend(t *testing.T) {
	b := newBed(t)
	b.writeConfig(t, webVIP("be1", "be2", "be3"))
	b.startDaemon()
	b.waitState(t, 5*time.Second, "be1, be2 and be3 healthy", allHealthy)

	b.servers[1].http.Close()
	b.waitState(t, 5*time.Second, "be2 down (weight 0) after its server stopped", func(v daemon.View) bool {
		be, ok := web(v)["be2"]
		return ok && !be.Healthy && be.Weight == 0
	})

	reload := func(backends ...string) {
		t.Helper()
		b.writeConfig(t, webVIP(backends...))
		if code, out := b.admin("POST", "/v1/reload", ""); code != 200 {
			t.Fatalf("POST /v1/reload: %d %s", code, out)
		}
		b.waitState(t, 5*time.Second, fmt.Sprintf("the reload applied (web on %v)", backends), hasExactly(backends...))
	}
	reload("be1", "be3")
	b.servers[1].startHTTP(t, b.be[1])
	reload("be1", "be2", "be3")

	v, took := b.waitState(t, 5*time.Second, "be2, added back with its server up, healthy with weight > 0", func(v daemon.View) bool {
		be, ok := web(v)["be2"]
		return ok && be.Healthy && be.Weight > 0
	})
	t.Logf("be2 back in the ring %s after the reload that added it: %s", took.Round(time.Millisecond), describe(v))

	// And it takes new connections.
	got, failed := map[string]int{}, 0
	deadline := time.Now().Add(3 * time.Second)
	for got["be2"] == 0 && time.Now().Before(deadline) {
		name, err := b.get()
		if err != nil {
			failed++
			t.Logf("request: %v", err)
			continue
		}
		got[name]++
	}
	if got["be2"] == 0 || failed > 0 {
		t.Errorf("after be2 was added back: requests answered %v, %d failed; want be2 among them and none failed", got, failed)
	}
}
