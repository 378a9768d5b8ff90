package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/pkg/health"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/memdp"
)

// pfDataplane is the in-memory data plane with a prefilter, as XDP's: a deny list whose
// entries keep their drop counters while listed, and a policy per VIP.
type pfDataplane struct {
	*memdp.Dataplane
	mu       sync.Mutex
	deny     map[netip.Prefix]uint64
	policies map[lb.VIPKey]lb.Policy
	// DenyAdd and DenyDelete fail with these, changing nothing.
	failAdd, failDelete error
}

func (p *pfDataplane) DenyAdd(ps []netip.Prefix) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failAdd != nil {
		err := p.failAdd
		p.failAdd = nil // once: the undo's own addition works
		return err
	}
	for _, x := range ps {
		if _, ok := p.deny[x]; !ok {
			p.deny[x] = 0
		}
	}
	return nil
}

func (p *pfDataplane) DenyDelete(ps []netip.Prefix) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failDelete != nil {
		return p.failDelete
	}
	for _, x := range ps {
		delete(p.deny, x)
	}
	return nil
}

func (p *pfDataplane) DenyList() ([]lb.DenyEntry, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []lb.DenyEntry
	for x, n := range p.deny {
		out = append(out, lb.DenyEntry{Prefix: x, Drops: n})
	}
	slices.SortFunc(out, func(a, b lb.DenyEntry) int { return strings.Compare(a.Prefix.String(), b.Prefix.String()) })
	return out, nil
}

func (p *pfDataplane) SetPolicy(k lb.VIPKey, pol lb.Policy) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pol.Allow == nil && pol.GuardRate == 0 && pol.GuardDropRate == 0 {
		delete(p.policies, k)
	} else {
		p.policies[k] = pol
	}
	return nil
}

func (p *pfDataplane) PolicyCounters() (map[lb.VIPKey]lb.PolicyCounters, error) { return nil, nil }

// listed is the data plane's deny list, as strings.
func (p *pfDataplane) listed() []string {
	list, _ := p.DenyList()
	out := []string{}
	for _, e := range list {
		out = append(out, e.Prefix.String())
	}
	slices.Sort(out)
	return out
}

// testNode is a daemon started as Run starts one, on the in-memory data plane, without
// its goroutines, listeners or BGP: enough to reload it and read its state.
type testNode struct {
	*Daemon
	dp      *pfDataplane
	cfgPath string
}

// testConfig is a node's configuration before its vips list (and what follows it).
const testConfig = `interfaces: [eth0]
dataplane: xdp
nexthop: {mac: "02:00:00:00:00:01"}
encap: {source4: 192.0.2.192/26}
`

func startTestNode(t *testing.T, cfg string) *testNode {
	t.Helper()
	dir := t.TempDir()
	n := &testNode{cfgPath: filepath.Join(dir, "l4lb.yaml")}
	n.write(t, strings.ReplaceAll(cfg, "STATE", filepath.Join(dir, "state.json")))
	d, err := New(Options{ConfigPath: n.cfgPath, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	n.Daemon = d
	n.dp = &pfDataplane{Dataplane: memdp.New(d.cfg.XDP.RingSize, 4095), deny: map[netip.Prefix]uint64{}, policies: map[lb.VIPKey]lb.Policy{}}
	d.dp = n.dp
	d.m = newMetrics(prometheus.NewRegistry(), d)
	spec, err := specFromConfig(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := planPrefilter(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	runtime, err := loadDeny(d.cfg.StateFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.applyPrefilter(plan, runtime); err != nil {
		t.Fatal(err)
	}
	d.ctrl = lb.NewController(d.log, d.dp, 4095, nil, d.onApply)
	d.prober = health.NewProber(d.log, d.onHealth)
	d.ctrl.SetSpec(spec)
	if err := d.setHealthTargets(d.cfg); err != nil {
		t.Fatal(err)
	}
	n.apply(t)
	return n
}

func (n *testNode) write(t *testing.T, cfg string) {
	t.Helper()
	if err := os.WriteFile(n.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload rewrites the configuration (STATE stands for the state file) and reloads it.
func (n *testNode) reload(t *testing.T, cfg string) error {
	t.Helper()
	n.write(t, strings.ReplaceAll(cfg, "STATE", n.cfg.StateFile))
	return n.Reload()
}

func (n *testNode) apply(t *testing.T) {
	t.Helper()
	if res := n.ctrl.Apply(context.Background()); res.Err != nil {
		t.Fatal(res.Err)
	}
}

// backend is the node's view of one backend of a VIP.
func (n *testNode) backend(t *testing.T, vip, addr string) BackendView {
	t.Helper()
	for _, v := range n.view().VIPs {
		for _, b := range v.Backends {
			if v.Name == vip && b.Address == addr {
				return b
			}
		}
	}
	t.Fatalf("no backend %s in vip %s", addr, vip)
	return BackendView{}
}
