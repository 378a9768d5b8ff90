package xdp

import (
	"errors"
	"path/filepath"
	"testing"

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

	// Other sizes cannot adopt these maps, and the error says what to do.
	_, err = Load(Options{PinPath: dir, RingSize: 251})
	if !errors.Is(err, ErrIncompatible) {
		t.Errorf("load with another ring size: %v, want ErrIncompatible", err)
	}
}

func TestPrivilegedLoadRejectsBadRingSize(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, n := range []uint32{1, 4, 65536} {
		if _, err := Load(Options{RingSize: n}); !errors.Is(err, lb.ErrRingSize) {
			t.Errorf("ring size %d: %v, want ErrRingSize", n, err)
		}
	}
}
