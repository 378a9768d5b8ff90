package nft

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netns"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

var update = flag.Bool("update", false, "rewrite golden files")

const testRing = 4099 // small prime: quick ring swaps in tests

// bed is the NAT test bed with the nftables data plane programming its LB namespace.
type bed struct {
	*testutil.NATBed
	d *Dataplane
}

var (
	vip4 = netip.MustParseAddr("198.51.100.10")
	vip6 = netip.MustParseAddr("2001:db8:f::10")
)

func newBed(t *testing.T) *bed {
	t.Helper()
	testutil.RequireCommands(t, "nft")
	b := &bed{NATBed: testutil.NewNATBed(t)}
	h, err := netns.GetFromName(b.LB.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	b.d, err = New(Options{RingSize: testRing, NetNS: int(h), Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bed) ask(t *testing.T, k lb.VIPKey, sport uint16) (string, error) {
	t.Helper()
	return b.Ask(k, sport)
}

func (b *bed) vip(k lb.VIPKey, flags lb.VIPFlags, weights ...uint32) lb.VIP {
	return b.VIP(k, flags, weights...)
}

// predict is the backend XDP's flow hash and ring slot pick for the flow.
func predict(t *testing.T, v lb.VIP, src netip.Addr, sport uint16) netip.Addr {
	t.Helper()
	table, err := lb.MaglevTable(v.Backends, testRing)
	if err != nil {
		t.Fatal(err)
	}
	f := xdp.Flow{Src: src, Dst: v.Key.Addr, Sport: sport, Dport: v.Key.Port, Proto: v.Key.Proto}
	id := table[xdp.RingSlot(xdp.SlotScaled, xdp.FlowHash(f, v.Flags), testRing)]
	for _, b := range v.Backends {
		if b.ID == id {
			return b.Addr
		}
	}
	return netip.Addr{}
}

func (b *bed) nameOf(a netip.Addr) string { return b.Name(a) }

func (b *bed) nft(t *testing.T, args ...string) string {
	t.Helper()
	return b.LB.Run(t, append([]string{"nft"}, args...)...)
}

func TestPrivilegedNFTForwarding(t *testing.T) {
	b := newBed(t)
	keys := []lb.VIPKey{
		{Addr: vip4, Port: 80, Proto: lb.ProtoTCP},
		{Addr: vip4, Port: 53, Proto: lb.ProtoUDP},
		{Addr: vip6, Port: 80, Proto: lb.ProtoTCP},
		{Addr: vip6, Port: 53, Proto: lb.ProtoUDP},
	}
	vips := map[lb.VIPKey]lb.VIP{}
	for i, k := range keys {
		var flags lb.VIPFlags
		if i == 1 {
			flags = lb.FlagHashNoSourcePort
		}
		vips[k] = b.vip(k, flags)
		if err := b.d.SetVIP(vips[k]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.d.Attach(context.Background(), []string{"l0"}); err != nil {
		t.Fatal(err)
	}

	// Every flow reaches the backend XDP's hash and ring slot pick, and the backend sees
	// the LB node's address (masquerade).
	for _, k := range keys {
		t.Run(k.String(), func(t *testing.T) {
			src := netip.MustParseAddr("192.0.2.1")
			if k.Addr.Is6() {
				src = netip.MustParseAddr("2001:db8:c::1")
			}
			seen := map[string]int{}
			for i := range 40 {
				sport := uint16(20000 + 7*i)
				got, err := b.ask(t, k, sport)
				if err != nil {
					t.Fatalf("flow from port %d: %v", sport, err)
				}
				want := predict(t, vips[k], src, sport)
				name := b.CheckAnswer(t, got)
				if name != b.nameOf(want) {
					t.Errorf("flow from port %d reached %s, XDP's hash picks %s", sport, name, b.nameOf(want))
				}
				seen[name]++
			}
			if vips[k].Flags&lb.FlagHashNoSourcePort == 0 && len(seen) != 2 {
				t.Errorf("40 flows reached %v, want both backends", seen)
			}
			if vips[k].Flags&lb.FlagHashNoSourcePort != 0 && len(seen) != 1 {
				t.Errorf("no-sport vip: 40 flows of one client reached %v, want one backend", seen)
			}
		})
	}

	cs, err := b.d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if c := cs.VIPs[k]; c.NewFlows != 40 || c.Packets < 40 {
			t.Errorf("counters of %s: %+v, want 40 new flows and at least 40 packets", k, c)
		}
	}
	var beFlows uint64
	for _, c := range cs.Backends {
		beFlows += c.NewFlows
	}
	if beFlows != 160 {
		t.Errorf("backend new flows sum to %d, want 160: %+v", beFlows, cs.Backends)
	}

	// Drain be1 on the TCP VIP: new flows all go to be2.
	k := keys[0]
	vips[k] = b.vip(k, 0, 0, 1)
	if err := b.d.SetVIP(vips[k]); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		got, err := b.ask(t, k, uint16(30000+i))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, "be2 ") {
			t.Fatalf("drained be1 still got a new flow: %q", got)
		}
	}
	// Every backend drained: new flows are dropped, counted.
	vips[k] = b.vip(k, 0, 0, 0)
	if err := b.d.SetVIP(vips[k]); err != nil {
		t.Fatal(err)
	}
	if got, err := b.ask(t, k, 31000); err == nil {
		t.Fatalf("vip with every backend drained answered %q", got)
	}
	cs, err = b.d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cs.Global[CounterNoBackend] == 0 {
		t.Errorf("%s = 0 after a refused flow", CounterNoBackend)
	}
	// Only one ring per VIP remains after the swaps.
	if n := strings.Count(b.nft(t, "-t", "list", "table", "inet", TableName), "map ring0_"); n != 1 {
		t.Errorf("%d rings of vip 0 after three swaps, want 1", n)
	}
}

// TestPrivilegedNFTRestoreAndCleanup: a rule deleted by hand is noticed, counted and
// written again; the golden table; cleanup leaves nothing.
func TestPrivilegedNFTRestoreAndCleanup(t *testing.T) {
	b := newBed(t)
	k := lb.VIPKey{Addr: vip4, Port: 80, Proto: lb.ProtoTCP}
	k6 := lb.VIPKey{Addr: vip6, Port: 0, Proto: lb.ProtoUDP}
	for _, v := range []lb.VIP{b.vip(k, 0), b.vip(k6, lb.FlagHashNoSourcePort)} {
		if err := b.d.SetVIP(v); err != nil {
			t.Fatal(err)
		}
	}
	// Idempotent re-apply: the same table afterwards.
	before := b.nft(t, "-t", "list", "table", "inet", TableName)
	if err := b.d.SetVIP(b.vip(k, 0)); err != nil {
		t.Fatal(err)
	}
	after := b.nft(t, "-t", "list", "table", "inet", TableName)
	// The same rules, up to the ring's generation and the order of VIPs in a chain.
	norm := func(s string) []string {
		lines := strings.Split(regexp.MustCompile(`ring(\d+)_\d+`).ReplaceAllString(s, "ring${1}_N"), "\n")
		slices.Sort(lines)
		return lines
	}
	if diff := cmp.Diff(norm(before), norm(after)); diff != "" {
		t.Errorf("re-applying the same vip changed the table (-before +after):\n%s", diff)
	}
	golden(t, "table.golden", after)

	p, err := b.d.Programmed()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.VIPs) != 2 || !p.VIPs[k].Ready || len(p.Backends) != 4 {
		t.Fatalf("programmed: %+v", p)
	}
	// Delete the dnat rule by hand.
	out := b.nft(t, "-a", "list", "chain", "inet", TableName, chainDNAT)
	m := regexp.MustCompile(`comment "l4lb vip 198\.51\.100\.10 80 6 [^"]*" # handle (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no dnat rule for %s in:\n%s", k, out)
	}
	b.nft(t, "delete", "rule", "inet", TableName, chainDNAT, "handle", m[1])
	kicked := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.d.opts.CheckInterval = 50 * time.Millisecond
	go func() { _ = b.d.Watch(ctx, func() { kicked <- struct{}{} }) }()
	select {
	case <-kicked:
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not notice the deleted rule")
	}
	p, err = b.d.Programmed()
	if err != nil {
		t.Fatal(err)
	}
	if p.VIPs[k].Ready {
		t.Fatal("vip reported ready without its dnat rule")
	}
	if err := b.d.SetVIP(b.vip(k, 0)); err != nil {
		t.Fatal(err)
	}
	if got, err := b.ask(t, k, 0); err != nil || !strings.HasPrefix(got, "be") {
		t.Fatalf("after restoring: %q, %v", got, err)
	}
	cs, err := b.d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cs.Global[CounterRestored] != 1 {
		t.Errorf("%s = %d, want 1", CounterRestored, cs.Global[CounterRestored])
	}
	// The whole table deleted by hand: every VIP and backend is missing.
	b.nft(t, "delete", "table", "inet", TableName)
	if p, err = b.d.Programmed(); err != nil || len(p.VIPs) != 0 || len(p.Backends) != 0 {
		t.Fatalf("after the table was deleted: %+v, %v", p, err)
	}

	// Delete a VIP, then cleanup: nothing of ours remains, and other tables are untouched.
	for _, v := range []lb.VIP{b.vip(k, 0), b.vip(k6, 0)} {
		if err := b.d.SetVIP(v); err != nil {
			t.Fatal(err)
		}
	}
	b.nft(t, "add", "table", "inet", "someone_else")
	if err := b.d.DeleteVIP(k6); err != nil {
		t.Fatal(err)
	}
	if out := b.nft(t, "-t", "list", "table", "inet", TableName); strings.Contains(out, "2001:db8:f::10") || strings.Contains(out, "ring1_") {
		t.Errorf("deleted vip left behind:\n%s", out)
	}
	if err := b.d.Unpin(); err != nil {
		t.Fatal(err)
	}
	if out := b.nft(t, "list", "tables"); strings.Contains(out, TableName+"\n") || !strings.Contains(out, "someone_else") {
		t.Errorf("after cleanup: %q", out)
	}
}

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
