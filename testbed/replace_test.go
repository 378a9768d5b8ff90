package testbed_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/testbed"
)

// lbConfigs writes each LB node's config: the committed one with its VIPs replaced by web
// (VIP4, http on port 80) on the backends web4 names, and web6 (VIP6, port 80) on all
// three, which keeps a route to each VIP. rewrite writes them again with other backends.
type lbConfigs struct {
	dir string
}

func (c lbConfigs) path(lb string) string { return filepath.Join(c.dir, lb+".yaml") }

func (c lbConfigs) write(t *testing.T, web4 ...string) {
	t.Helper()
	health := map[string]any{"type": "http", "interval": "500ms", "timeout": "400ms", "rise": 2, "fall": 2, "path": "/"}
	backends := func(names []string, addr func(string) string) []map[string]any {
		var out []map[string]any
		for _, n := range names {
			out = append(out, map[string]any{"address": addr(n)})
		}
		return out
	}
	vips := []map[string]any{
		{"name": "web", "address": testbed.VIP4, "port": 80, "protocol": "tcp", "health": health,
			"backends": backends(web4, testbed.BackendAddr4)},
		{"name": "web6", "address": testbed.VIP6, "port": 80, "protocol": "tcp", "health": health,
			"backends": backends(testbed.BackendNodes, testbed.BackendAddr6)},
	}
	for _, lb := range testbed.LBNodes {
		raw, err := os.ReadFile(filepath.Join("..", "conf", "testbed", lb+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			t.Fatalf("%s.yaml: %v", lb, err)
		}
		cfg["vips"] = vips
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.path(lb), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// webBackends returns, for each LB node, the web VIP's backends by name (be1...).
func webBackends(ctx context.Context, b *testbed.Bed) (map[string]map[string]daemon.BackendView, error) {
	out := map[string]map[string]daemon.BackendView{}
	for _, lb := range testbed.LBNodes {
		raw, err := b.Output(ctx, lb, b.L4LB(), "status", "-o", "json")
		if err != nil {
			return nil, err
		}
		var v daemon.View
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			return nil, fmt.Errorf("%s: status: %w", lb, err)
		}
		out[lb] = map[string]daemon.BackendView{}
		for _, vip := range v.VIPs {
			if vip.Name != "web" {
				continue
			}
			for _, be := range vip.Backends {
				for _, n := range testbed.BackendNodes {
					if testbed.BackendAddr4(n) == be.Address {
						out[lb][n] = be
					}
				}
			}
		}
	}
	return out, nil
}

func describeWeb(st map[string]map[string]daemon.BackendView) string {
	var parts []string
	for _, lb := range testbed.LBNodes {
		var bs []string
		for _, n := range slices.Sorted(maps.Keys(st[lb])) {
			be := st[lb][n]
			bs = append(bs, fmt.Sprintf("%s id %d weight %d", n, be.ID, be.Weight))
		}
		parts = append(parts, fmt.Sprintf("%s: %s", lb, strings.Join(bs, ", ")))
	}
	return strings.Join(parts, "; ")
}

// On both LB nodes, one backend of a VIP is replaced by another in one reload (web on
// be1, be2 -> be1, be3) while the client opens new connections through the VIP the whole
// time: every request is answered, and once both nodes applied the change only be1 and
// be3 answer, be3 included. be3 takes the lowest free backend id, the one be2 frees in
// the same change.
func TestPrivilegedReplaceBackendTestbed(t *testing.T) {
	confs := lbConfigs{dir: t.TempDir()}
	confs.write(t, "be1", "be2")
	b := newBedWith(t, func(lb string) (string, []string) { return confs.path(lb), nil })
	ctx := context.Background()
	st, err := webBackends(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before: %s", describeWeb(st))

	request := func() (string, error) {
		c, err := b.Dial("client", net.JoinHostPort(testbed.VIP4, "80"))
		if err != nil {
			return "", err
		}
		defer c.Close()
		return testbed.Get(c, bufio.NewReader(c), testbed.VIP4)
	}
	load := testutil.StartLoad(4, 10*time.Millisecond, request)
	stopped := false
	defer func() {
		if !stopped {
			load.Stop()
		}
	}()
	time.Sleep(time.Second) // traffic before the change

	confs.write(t, "be1", "be3")
	reloadAt := time.Now()
	for _, lb := range testbed.LBNodes {
		if err := b.Signal(lb, "l4lb", syscall.SIGHUP, 0); err != nil {
			t.Fatal(err)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var lastErr error
	if !testbed.Eventually(pctx, func() bool {
		st, lastErr = webBackends(pctx, b)
		if lastErr != nil {
			return false
		}
		for _, lb := range testbed.LBNodes {
			if !slices.Equal(slices.Sorted(maps.Keys(st[lb])), []string{"be1", "be3"}) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the reload did not apply on both nodes within 10s: %s (%v)", describeWeb(st), lastErr)
	}
	appliedAt := time.Now()
	t.Logf("reload -> applied on both nodes in %s: %s", appliedAt.Sub(reloadAt).Round(time.Millisecond), describeWeb(st))
	time.Sleep(2 * time.Second) // traffic after the change
	reqs := load.Stop()
	stopped = true

	testutil.CheckReplaced(t, reqs, reloadAt, appliedAt, "be1", "be2", "be3", func() string {
		now, _ := webBackends(ctx, b)
		return "web now " + describeWeb(now)
	})
}
