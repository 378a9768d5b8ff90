package xdp

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/internal/bpfobj"
	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
)

func conntrackKey(f Flow) *prevFlowKey {
	src, fam := bpfobj.Addr16(f.Src)
	dst, _ := bpfobj.Addr16(f.Dst)
	return &prevFlowKey{Src: src, Dst: dst, Sport: htons(f.Sport), Dport: htons(f.Dport), Proto: uint8(f.Proto), Family: fam}
}

// prevObject is the XDP object of the previous release (main at 6309cf8), as bpf2go
// built it then: its maps have the layout a node being upgraded has pinned.
const prevObject = "testdata/xdplb-6309cf8.o"

// loadPrevious loads the previous release's program with its maps pinned in dir, the
// way its loader did (per-VIP inner rings of ringSize slots, lb_meta), and programs vs.
func loadPrevious(t *testing.T, dir string, ringSize uint32, vs []lb.VIP) *ebpf.Collection {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(prevObject)
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps["rings"].InnerMap.MaxEntries = ringSize
	if err := spec.Variables["ring_size"].Set(ringSize); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coll.Close() })
	meta, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: "lb_meta", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1, Pinning: ebpf.PinByName},
		ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := meta.Put(uint32(0), ringSize); err != nil {
		t.Fatal(err)
	}
	meta.Close()
	cfg := xdplbLbConfig{HasSrc4: 1, Src4: testConfig.Source4.Masked().Addr().As4(), Src4HostMask: hostMask(32 - testConfig.Source4.Bits())}
	if err := coll.Maps["lb_cfg"].Put(uint32(0), &cfg); err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		for _, b := range v.Backends {
			a, fam := bpfobj.Addr16(b.Addr)
			if err := coll.Maps["backends"].Put(b.ID, &xdplbBackend{Addr: a, Family: fam, Flags: 1}); err != nil {
				t.Fatal(err)
			}
		}
		table, err := lb.MaglevTable(v.Backends, ringSize)
		if err != nil {
			t.Fatal(err)
		}
		inner, err := ebpf.NewMap(spec.Maps["rings"].InnerMap)
		if err != nil {
			t.Fatal(err)
		}
		keys := make([]uint32, len(table))
		for j := range keys {
			keys[j] = uint32(j)
		}
		if _, err := inner.BatchUpdate(keys, table, nil); err != nil {
			t.Fatal(err)
		}
		if err := coll.Maps["rings"].Put(uint32(i), inner); err != nil {
			t.Fatal(err)
		}
		inner.Close()
		k := vipKey(v.Key)
		if err := coll.Maps["vips"].Put(&k, &xdplbVipMeta{Id: uint32(i), Flags: uint32(v.Flags)}); err != nil {
			t.Fatal(err)
		}
		ak := vipAddrKey(v.Key)
		if err := coll.Maps["vip_addrs"].Put(&ak, uint32(1)); err != nil {
			t.Fatal(err)
		}
	}
	return coll
}

// An upgrade from the previous release: its pinned maps (per-VIP rings in an array of
// maps, 1,024-entry VIP maps, lb_meta) are migrated by Load. Conntrack entries, backend
// ids, VIP ids and every ring slot survive, so established and new flows alike keep
// their backends.
func TestPrivilegedMigrateFromPreviousRelease(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := bpffsDir(t)
	const ringSize = 4099
	web := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")}
	dns := lb.VIP{Key: key("203.0.113.11", 53, udp), Backends: backends(4, "198.51.100.14", "198.51.100.15")}
	prev := loadPrevious(t, dir, ringSize, []lb.VIP{web, dns})

	// Flows through the previous program fill conntrack.
	var flows []pkt
	for i := 0; i < 50; i++ {
		flows = append(flows, pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: uint16(30000 + i), dport: 80, flags: "S"},
			pkt{src: cli4, dst: "203.0.113.11", proto: udp, sport: uint16(30000 + i), dport: 53})
	}
	before := map[int]uint32{}
	var ct prevCtEntry
	for i, f := range flows {
		if ret, _ := runProg(t, prev.Programs["xdp_lb"], f.build(t)); ret != xdpTx {
			t.Fatalf("previous program: flow %d verdict %d", i, ret)
		}
		if err := prev.Maps["conntrack"].Lookup(conntrackKey(f.flow()), &ct); err != nil {
			t.Fatalf("previous program: flow %d not in conntrack: %v", i, err)
		}
		before[i] = ct.BackendID
	}
	prev.Close()

	d, err := Load(Options{PinPath: dir, RingSize: ringSize, Logger: slog.New(slog.NewTextHandler(tLog{t}, nil))})
	if err != nil {
		t.Fatalf("load over the previous release's pins: %v", err)
	}
	t.Cleanup(func() { d.Unpin(); d.Close() })
	if _, err := os.Stat(filepath.Join(dir, "lb_meta")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lb_meta pin left behind: %v", err)
	}
	if got := d.objs.Vips.MaxEntries(); got != MaxVIPs {
		t.Errorf("vips max entries %d after migration, want %d", got, MaxVIPs)
	}
	ids, err := d.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[lb.VIPKey]uint32{web.Key: 0, dns.Key: 1}, ids); diff != "" {
		t.Errorf("vip ids after migration (-want +got):\n%s", diff)
	}
	for i, v := range []lb.VIP{web, dns} {
		ring, err := d.RingOf(uint32(i))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := lb.MaglevTable(v.Backends, ringSize)
		if diff := cmp.Diff(want, ring); diff != "" {
			t.Errorf("ring of %s after migration (-want +got):\n%s", v.Key, diff)
		}
	}
	// Established flows keep their conntrack entries and backends.
	for i, f := range flows {
		got, ok, err := d.ConntrackLookup(f.flow())
		if err != nil || !ok || got != before[i] {
			t.Fatalf("flow %d: conntrack (%d, %v, %v) after migration, want %d", i, got, ok, err, before[i])
		}
		if ret, _ := runProg(t, d.Program(), f.build(t)); ret != xdpTx {
			t.Fatalf("flow %d: verdict %d after migration", i, ret)
		}
		if got, _, _ := d.ConntrackLookup(f.flow()); got != before[i] {
			t.Fatalf("flow %d moved from backend %d to %d", i, before[i], got)
		}
	}
	// New flows hash onto the migrated rings: the same backend as before, conntrack or not.
	for i, f := range flows {
		ctDelete(t, d, f.flow())
		runProg(t, d.Program(), f.build(t))
		if got, _, _ := d.ConntrackLookup(f.flow()); got != before[i] {
			t.Fatalf("flow %d re-hashed onto backend %d, want %d", i, got, before[i])
		}
	}
	// The controller's rewrite of the same VIPs keeps the rings (and ids) identical.
	for i, v := range []lb.VIP{web, dns} {
		v.RingSize = ringSize
		if id, err := d.SetVIP(v); err != nil || id != uint32(i) {
			t.Fatalf("SetVIP %s: id %d, %v", v.Key, id, err)
		}
		ring, _ := d.RingOf(uint32(i))
		want, _ := lb.MaglevTable(v.Backends, ringSize)
		if diff := cmp.Diff(want, ring); diff != "" {
			t.Errorf("ring of %s rewritten (-want +got):\n%s", v.Key, diff)
		}
	}
	// A second load adopts what the first migrated.
	d2, err := Load(Options{PinPath: dir, RingSize: ringSize})
	if err != nil {
		t.Fatalf("load after migration: %v", err)
	}
	d2.Close()
}

// A state map whose value layout changed has no converter: Load fails, says what to do,
// and leaves the pinned map alone. Counter maps of another shape are replaced.
func TestPrivilegedMigrateRules(t *testing.T) {
	testutil.RequirePrivileged(t)
	t.Run("state map without converter", func(t *testing.T) {
		dir := bpffsDir(t)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: "backends", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: MaxBackends, Pinning: ebpf.PinByName},
			ebpf.MapOptions{PinPath: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Put(uint32(7), uint64(42)); err != nil {
			t.Fatal(err)
		}
		_, err = Load(Options{PinPath: dir})
		if !errors.Is(err, ErrMigrate) {
			t.Fatalf("load: %v, want ErrMigrate", err)
		}
		t.Logf("error: %v", err)
		again, err := ebpf.LoadPinnedMap(filepath.Join(dir, "backends"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		var v uint64
		if err := again.Lookup(uint32(7), &v); err != nil || v != 42 {
			t.Errorf("pinned backends changed: %d, %v", v, err)
		}
		os.RemoveAll(dir)
	})
	t.Run("counter map grown", func(t *testing.T) {
		dir := bpffsDir(t)
		d, err := Load(Options{PinPath: dir})
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		// An older stats map with fewer ids (the next release appends ids).
		path := filepath.Join(dir, "stats")
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		small, err := ebpf.NewMap(&ebpf.MapSpec{Name: "stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 3})
		if err != nil {
			t.Fatal(err)
		}
		if err := small.Pin(path); err != nil {
			t.Fatal(err)
		}
		small.Close()
		d, err = Load(Options{PinPath: dir})
		if err != nil {
			t.Fatalf("load over a smaller stats map: %v", err)
		}
		defer func() { d.Unpin(); d.Close() }()
		if got := d.objs.Stats.MaxEntries(); got != uint32(len(statNames)) {
			t.Errorf("stats has %d entries, want %d", got, len(statNames))
		}
		if _, err := d.Stats(); err != nil {
			t.Error(err)
		}
	})
}

// tLog writes log lines to the test's log.
type tLog struct{ t *testing.T }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
