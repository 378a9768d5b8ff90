package iptables

import (
	"context"
	"errors"
	"flag"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s missing: run with -update", path)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; -update rewrites it):\n%s", path, diff)
	}
}

var (
	vip4 = netip.MustParseAddr("198.51.100.10")
	vip6 = netip.MustParseAddr("2001:db8:f::10")
)

func testState() (map[lb.VIPKey]vipEntry, map[uint32]netip.Addr) {
	b1, b2, b3 := netip.MustParseAddr("203.0.113.6"), netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("203.0.113.14")
	b6 := netip.MustParseAddr("2001:db8:b1::2")
	web := lb.VIPKey{Addr: vip4, Port: 80, Proto: lb.ProtoTCP}
	dns := lb.VIPKey{Addr: vip4, Port: 53, Proto: lb.ProtoUDP}
	any6 := lb.VIPKey{Addr: vip6, Proto: lb.ProtoUDP}
	vips := map[lb.VIPKey]vipEntry{
		web:  {0, lb.VIP{Key: web, Backends: []lb.Backend{{ID: 1, Addr: b1, Weight: 1}, {ID: 2, Addr: b2, Weight: 2}, {ID: 3, Addr: b3, Weight: 1}}}},
		dns:  {1, lb.VIP{Key: dns, Flags: lb.FlagHashNoSourcePort, Backends: []lb.Backend{{ID: 1, Addr: b1, Weight: 0}, {ID: 2, Addr: b2, Weight: 1}}}},
		any6: {2, lb.VIP{Key: any6, Backends: []lb.Backend{{ID: 11, Addr: b6, Weight: 0}}}},
	}
	return vips, map[uint32]netip.Addr{1: b1, 2: b2, 3: b3, 11: b6}
}

// TestRender: the generated iptables-restore input for both families, on an empty node
// (jumps added) and on one that holds them and a stale VIP chain (jumps kept, chain gone,
// counters carried over).
func TestRender(t *testing.T) {
	vips, bes := testState()
	empty := state{counters: map[string]counter{}, jumps: map[string]bool{}, chains: map[string]bool{}}
	held := state{counters: map[string]counter{"l4lb vcount 0": {7, 420}, "l4lb be 0 2 203.0.113.10": {3, 180}},
		jumps: map[string]bool{}, chains: map[string]bool{"ipv4 nat L4LB-V9": true}}
	for _, fam := range []string{"ipv4", "ipv6"} {
		for _, j := range []string{"mangle PREROUTING L4LB-COUNT", "nat PREROUTING L4LB-PREROUTING", "nat POSTROUTING L4LB-POSTROUTING", "filter FORWARD L4LB-FORWARD"} {
			held.jumps[fam+" "+j] = true
		}
	}
	var got strings.Builder
	for _, c := range []struct {
		name string
		s    state
	}{{"empty node", empty}, {"node holding jumps, counters and a stale chain", held}} {
		for _, six := range []bool{false, true} {
			got.WriteString("# " + c.name + ", ipv6=" + strconv.FormatBool(six) + "\n")
			got.WriteString(render(six, vips, bes, c.s))
		}
	}
	golden(t, "render.golden", got.String())
}

// TestStatisticShares: the statistic probabilities give every backend its weight's share.
func TestStatisticShares(t *testing.T) {
	vips, bes := testState()
	out := render(false, vips, bes, state{counters: map[string]counter{}, jumps: map[string]bool{}, chains: map[string]bool{}})
	re := regexp.MustCompile(`-A L4LB-V0 (?:-m statistic --mode random --probability ([0-9.]+) )?-j DNAT --to-destination (\S+)`)
	left, share := 1.0, map[string]float64{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		p := 1.0
		if m[1] != "" {
			p, _ = strconv.ParseFloat(m[1], 64)
		}
		share[m[2]] = left * p
		left -= left * p
	}
	want := map[string]float64{"203.0.113.6": 0.25, "203.0.113.10": 0.5, "203.0.113.14": 0.25}
	for a, w := range want {
		if math.Abs(share[a]-w) > 1e-9 {
			t.Errorf("backend %s gets %.4f of new flows, want %.4f (all: %v)", a, share[a], w, share)
		}
	}
}

func TestRenderRemove(t *testing.T) {
	save := `*nat
:PREROUTING ACCEPT [0:0]
:L4LB-PREROUTING - [0:0]
:L4LB-V0 - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -m comment --comment "l4lb jump" -j L4LB-PREROUTING
-A PREROUTING -j KUBE-SERVICES
-A L4LB-PREROUTING -d 198.51.100.10/32 -j L4LB-V0
COMMIT
*filter
:FORWARD ACCEPT [0:0]
COMMIT
`
	in, what := renderRemove(save)
	want := "*nat\n-D PREROUTING -m comment --comment \"l4lb jump\" -j L4LB-PREROUTING\n-F L4LB-PREROUTING\n-F L4LB-V0\n-X L4LB-PREROUTING\n-X L4LB-V0\nCOMMIT\n"
	if diff := cmp.Diff(want, in); diff != "" {
		t.Errorf("remove input (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"nat L4LB-PREROUTING", "nat L4LB-V0"}, what); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
}

func TestPrivilegedIPTables(t *testing.T) {
	testutil.RequireCommands(t, "iptables-restore", "ip6tables-restore", "iptables-save")
	b := testutil.NewNATBed(t)
	exec := []string{"ip", "netns", "exec", b.LB.Name()}
	d, err := New(Options{Exec: exec, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	keys := []lb.VIPKey{
		{Addr: vip4, Port: 80, Proto: lb.ProtoTCP},
		{Addr: vip4, Port: 53, Proto: lb.ProtoUDP},
		{Addr: vip6, Port: 80, Proto: lb.ProtoTCP},
		{Addr: vip6, Port: 53, Proto: lb.ProtoUDP},
	}
	for _, k := range keys {
		if err := d.SetVIP(b.VIP(k, 0)); err != nil {
			t.Fatal(err)
		}
	}
	// Idempotent: applying the same VIP again leaves the same rules.
	save := func() string {
		return b.LB.Run(t, "iptables-save") + b.LB.Run(t, "ip6tables-save")
	}
	norm := regexp.MustCompile(`(?m)^#.*\n`)
	before := norm.ReplaceAllString(save(), "")
	if err := d.SetVIP(b.VIP(keys[0], 0)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, norm.ReplaceAllString(save(), "")); diff != "" {
		t.Errorf("re-applying changed the rules (-before +after):\n%s", diff)
	}
	for _, k := range keys {
		seen := map[string]int{}
		for i := range 30 {
			got, err := b.Ask(k, uint16(20000+i))
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			seen[b.CheckAnswer(t, got)]++
		}
		if len(seen) != 2 {
			t.Errorf("%s: 30 flows reached %v, want both backends", k, seen)
		}
	}
	cs, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if c := cs.VIPs[k]; c.NewFlows != 30 || c.Packets < 30 {
			t.Errorf("counters of %s: %+v, want 30 new flows", k, c)
		}
	}
	var flows, pkts uint64
	for _, c := range cs.Backends {
		flows += c.NewFlows
		pkts += c.Packets
	}
	if flows != 120 || pkts < 120 {
		t.Errorf("backends: %d new flows, %d packets, want 120 and at least 120: %+v", flows, pkts, cs.Backends)
	}
	// hash_no_source_port: one client's connections all reach one backend.
	if err := d.SetVIP(b.VIP(keys[3], lb.FlagHashNoSourcePort)); err != nil {
		t.Fatal(err)
	}
	sticky := map[string]int{}
	for i := range 20 {
		got, err := b.Ask(keys[3], uint16(40000+i))
		if err != nil {
			t.Fatal(err)
		}
		sticky[b.CheckAnswer(t, got)]++
	}
	if len(sticky) != 1 {
		t.Errorf("no-source-port vip: one client's 20 flows reached %v, want one backend", sticky)
	}
	// Drain be1 of the TCP VIP: new flows go to be2 only; counters survive the rewrite.
	if err := d.SetVIP(b.VIP(keys[0], 0, 0, 1)); err != nil {
		t.Fatal(err)
	}
	for i := range 15 {
		got, err := b.Ask(keys[0], uint16(30000+i))
		if err != nil {
			t.Fatal(err)
		}
		if n := b.CheckAnswer(t, got); n != "be2" {
			t.Fatalf("drained be1 got a new flow")
		}
	}
	cs2, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if got := cs2.VIPs[keys[0]].NewFlows; got != 45 {
		t.Errorf("new flows of %s after the rewrite: %d, want 45 (counters kept)", keys[0], got)
	}

	// A rule deleted by hand is noticed and restored; the restoration is counted.
	b.LB.Run(t, "iptables", "-t", "nat", "-F", "L4LB-POSTROUTING")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d.opts.CheckInterval = 50 * time.Millisecond
	kicked := make(chan struct{}, 1)
	go func() {
		_ = d.Watch(ctx, func() {
			select {
			case kicked <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-kicked:
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not notice the flushed chain")
	}
	p, err := d.Programmed()
	if err != nil {
		t.Fatal(err)
	}
	if p.VIPs[keys[0]].Ready {
		t.Fatal("vip reported ready without its masquerade rule")
	}
	if err := d.SetVIP(b.VIP(keys[0], 0)); err != nil {
		t.Fatal(err)
	}
	if p, _ = d.Programmed(); len(p.VIPs) != 4 || len(p.Backends) != 4 {
		t.Fatalf("after restoring: %+v", p)
	}
	if got, err := b.Ask(keys[1], 0); err != nil {
		t.Fatalf("after restoring: %v", err)
	} else {
		b.CheckAnswer(t, got)
	}
	if cs, _ := d.Counters(); cs.Global[CounterRestored] != 1 {
		t.Errorf("%s = %d, want 1", CounterRestored, cs.Global[CounterRestored])
	}

	// A restarted daemon adopts the rules; deleting a VIP and a backend removes their
	// rules; cleanup leaves nothing of l4lb and nothing else is touched.
	b.LB.Run(t, "iptables", "-t", "nat", "-N", "SOMEONE-ELSE")
	d2, err := New(Options{Exec: exec})
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.DeleteVIP(keys[3]); err != nil {
		t.Fatal(err)
	}
	if err := d2.DeleteVIP(keys[2]); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{11, 12} {
		if err := d2.DeleteBackend(id); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := d2.Programmed(); len(p.VIPs) != 2 || len(p.Backends) != 2 {
		t.Fatalf("after deletes: %+v", p)
	}
	if out := b.LB.Run(t, "ip6tables-save"); strings.Contains(out, "2001:db8") || strings.Contains(out, "L4LB-V2") {
		t.Errorf("deleted vips left rules:\n%s", out)
	}
	if got, err := b.Ask(keys[0], 0); err != nil {
		t.Fatalf("remaining vip after deletes: %v", err)
	} else {
		b.CheckAnswer(t, got)
	}
	if err := d2.Unpin(); err != nil {
		t.Fatal(err)
	}
	if out := save(); strings.Contains(out, "L4LB") || strings.Contains(out, "l4lb") || !strings.Contains(out, "SOMEONE-ELSE") {
		t.Errorf("after cleanup:\n%s", out)
	}
}
