package xdp

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

// bpffsDir mounts a private bpffs on a temporary directory (the test machine may have
// none at /sys/fs/bpf) and unmounts it afterwards, pins and all.
func bpffsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
	return filepath.Join(dir, "l4lb")
}

func TestPrivilegedPinnedMapsSurviveReload(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := bpffsDir(t)
	opts := Options{PinPath: dir}

	web := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")}
	flow := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"}

	d1, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.SetConfig(testConfig); err != nil {
		t.Fatal(err)
	}
	id, err := d1.SetVIP(web)
	if err != nil {
		t.Fatal(err)
	}
	if ret, _ := runProg(t, d1.Program(), flow.build(t)); ret != xdpTx {
		t.Fatalf("first load: verdict %d", ret)
	}
	first, ok, err := d1.ConntrackLookup(flow.flow())
	if err != nil || !ok {
		t.Fatalf("no conntrack entry after the first packet: %v", err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	// A second load adopts the pinned maps: VIP, ring, conntrack and counters are all there.
	d2, err := Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d2.Unpin()
		d2.Close()
	})
	vips, err := d2.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := vips[web.Key]; !ok || got != id {
		t.Fatalf("after reload vips = %v, want %s with id %d", vips, web.Key, id)
	}
	if got, ok, _ := d2.ConntrackLookup(flow.flow()); !ok || got != first {
		t.Fatalf("after reload conntrack = (%d, %v), want %d", got, ok, first)
	}
	// An ACK of the same flow (a SYN would go to the ring without a lookup).
	if ret, _ := runProg(t, d2.Program(), with(flow, func(p *pkt) { p.flags = "A" }).build(t)); ret != xdpTx {
		t.Fatalf("after reload: verdict %d", ret)
	}
	stats, err := d2.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if stats["ct_miss"] != 1 || stats["ct_hit"] != 1 || stats["tx_encap4"] != 2 {
		t.Errorf("counters across the reload: %v, want 1 miss, 1 hit, 2 transmitted", stats)
	}
	// Re-adding the same VIP keeps its id.
	if again, err := d2.SetVIP(web); err != nil || again != id {
		t.Errorf("SetVIP after reload: id %d, %v; want %d", again, err, id)
	}

	if err := d2.Close(); err != nil {
		t.Fatal(err)
	}

	// Other sizes: the rings array and conntrack are migrated to their new sizes, the
	// conntrack entry and the ring survive, and the flow keeps its backend.
	d3, err := Load(Options{PinPath: dir, RingSize: 4099, RingSlots: 3 * DefaultRingSlots, ConntrackSize: 2 * DefaultConntrackSize})
	if err != nil {
		t.Fatalf("load with other sizes: %v", err)
	}
	t.Cleanup(func() { d3.Close() })
	if got, ok, _ := d3.ConntrackLookup(flow.flow()); !ok || got != first {
		t.Fatalf("after migration conntrack = (%d, %v), want %d", got, ok, first)
	}
	if got := d3.objs.Conntrack.MaxEntries(); got != ctBucketCount(2*DefaultConntrackSize) {
		t.Errorf("conntrack max entries %d after migration", got)
	}
	ring, err := d3.RingOf(id)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := lb.MaglevTable(web.Backends, lb.DefaultRingSize)
	if diff := cmp.Diff(want, ring); diff != "" {
		t.Errorf("ring after migration (-want +got):\n%s", diff)
	}
	ctDelete(t, d3, flow.flow())
	ret, out := runProg(t, d3.Program(), flow.build(t))
	if ret != xdpTx {
		t.Fatalf("after migration: verdict %d", ret)
	}
	if got, _, _ := d3.ConntrackLookup(flow.flow()); got != first {
		t.Errorf("re-hashed after migration onto backend %d, want %d (ring changed)", got, first)
	}
	_ = out
}

func TestPrivilegedLoadRejectsBadRingSize(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, n := range []uint32{1, 4, 65536} {
		if _, err := Load(Options{RingSize: n}); !errors.Is(err, lb.ErrRingSize) {
			t.Errorf("ring size %d: %v, want ErrRingSize", n, err)
		}
	}
}
