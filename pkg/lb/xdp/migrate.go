package xdp

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Pinned-map migration: a daemon of another release (or with other sizes) left maps in
// the pin directory whose shape (type, key or value size, max entries, flags, inner map)
// differs from what this program needs. Before the program loads, each such map is
// replaced, by these rules:
//
//   - Counter maps (every per-CPU array or hash: stats, vip_stats, pair_stats and any
//     added later, e.g. a stats map with more ids) are replaced by empty ones: their
//     counters restart, and the log says so.
//   - State maps (everything else: conntrack, backends, vips, vip_addrs, rings, ...) are
//     converted: a new map is filled from the old one and then takes the pin in one
//     rename, so a reader of the directory sees the old map or the new one. Same type,
//     key and value, other max entries: the entries are copied (hash maps must fit;
//     an LRU keeps what fits). Conntrack is placed again, entry by entry, into a table
//     of another size or from the LRU-hash layout (conntrack.go). The rings
//     of the previous layout (an array of maps, one ring per VIP) are converted to the
//     flat layout. Anything else has no converter and Load fails, saying what to do; it
//     never starts with empty state maps.
//
// Pins of maps this program no longer has (lb_meta) are removed.

// ErrMigrate: a pinned map cannot be converted to the shape this program needs.
var ErrMigrate = errors.New("pinned map cannot be migrated")

// migratingPrefix names a converted map's pin until it replaces the old one.
const migratingPrefix = "migrating_"

// stalePins are pins of earlier layouts that no map of this program uses.
var stalePins = []string{"lb_meta", "backend_stats"}

func isCounterMap(t ebpf.MapType) bool {
	return t == ebpf.PerCPUArray || t == ebpf.PerCPUHash || t == ebpf.LRUCPUHash
}

// migration is what migratePinned did: the state maps it replaced and, when conntrack
// was one of them, when its copy ended. The previous program may still be attached and
// writing entries into its own table until the links are updated: flows it starts in
// that window are not in the copy (their next packet is hashed again, on the rings the
// copy kept, so to the same backend unless a pass changes the ring first).
type migration struct {
	replaced []string
	ctCopied time.Time
}

func (m *migration) close() {}

// migratePinned brings every pinned map in dir to spec's shape (see above).
func migratePinned(spec *ebpf.CollectionSpec, dir string, log *slog.Logger) (mig *migration, err error) {
	mig = &migration{}
	defer func() {
		if err != nil {
			mig.close()
		}
	}()
	names := make([]string, 0, len(spec.Maps))
	for name, ms := range spec.Maps {
		if ms.Pinning == ebpf.PinByName {
			names = append(names, name)
		}
	}
	// rings last: converting it reads the (migrated) vips map.
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == "rings":
			return 1
		case b == "rings":
			return -1
		case a < b:
			return -1
		}
		return 1
	})
	for _, name := range names {
		ms := spec.Maps[name]
		path := filepath.Join(dir, name)
		old, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return mig, fmt.Errorf("open pinned map %s: %w", path, err)
		}
		diff := shapeDiff(ms, old)
		if diff == nil {
			old.Close()
			continue
		}
		err = migrateMap(spec, ms, old, dir, diff, log)
		old.Close()
		if err == nil && name == "conntrack" {
			mig.ctCopied = time.Now()
		}
		if err != nil {
			return mig, err
		}
		if !isCounterMap(ms.Type) {
			mig.replaced = append(mig.replaced, name)
		}
	}
	for _, name := range stalePins {
		path := filepath.Join(dir, name)
		if err := os.Remove(path); err == nil {
			log.Info("removed a pinned map this release no longer uses", "pin", path)
		} else if !errors.Is(err, os.ErrNotExist) {
			return mig, fmt.Errorf("remove stale pin %s: %w", path, err)
		}
	}
	return mig, nil
}

// shapeDiff says how a pinned map differs from its spec (nil: it can be adopted).
func shapeDiff(ms *ebpf.MapSpec, m *ebpf.Map) error {
	if err := ms.Compatible(m); err != nil {
		return err
	}
	if ms.InnerMap == nil {
		return nil
	}
	// Map-in-map: the inner maps present must match the inner template too.
	var id uint32
	for i := uint32(0); i < m.MaxEntries(); i++ {
		if err := m.Lookup(i, &id); err != nil {
			continue
		}
		inner, err := ebpf.NewMapFromID(ebpf.MapID(id))
		if err != nil {
			return fmt.Errorf("open inner map %d: %w", id, err)
		}
		defer inner.Close()
		if err := ms.InnerMap.Compatible(inner); err != nil {
			return fmt.Errorf("inner map: %w", err)
		}
		return nil
	}
	return nil
}

// replacePin pins m at path in place of what is pinned there, in one rename.
func replacePin(m *ebpf.Map, path string) error {
	// bpffs refuses names with a dot.
	tmp := filepath.Join(filepath.Dir(path), migratingPrefix+filepath.Base(path))
	_ = os.Remove(tmp)
	if err := m.Pin(tmp); err != nil {
		return fmt.Errorf("pin %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replace pin %s: %w", path, err)
	}
	return nil
}

func newUnpinned(ms *ebpf.MapSpec) (*ebpf.Map, error) {
	c := ms.Copy()
	c.Pinning = ebpf.PinNone
	return ebpf.NewMap(c)
}

// replaceEmpty puts an empty map of spec ms in the pin at path.
func replaceEmpty(ms *ebpf.MapSpec, path string) error {
	m, err := newUnpinned(ms)
	if err != nil {
		return fmt.Errorf("create %s: %w", ms.Name, err)
	}
	defer m.Close()
	return replacePin(m, path)
}

func migrateMap(spec *ebpf.CollectionSpec, ms *ebpf.MapSpec, old *ebpf.Map, dir string, diff error, log *slog.Logger) error {
	name := ms.Name
	path := filepath.Join(dir, name)
	log = log.With("map", name, "pin", path, "change", diff.Error())
	if isCounterMap(ms.Type) {
		if err := replaceEmpty(ms, path); err != nil {
			return err
		}
		log.Warn("pinned counter map has another shape: replaced, its counters restart from zero")
		return nil
	}
	if name == "rings" && old.Type() == ebpf.ArrayOfMaps {
		n, err := convertPerVIPRings(spec, old, dir)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", path, err)
		}
		log.Info("migrated pinned rings to the flat layout", "vips", n)
		return nil
	}
	if name == "vip_backends" {
		// Placed by hash over its size: the first pass after the load places every
		// VIP's backends again (the membership check waits for it: members_ready).
		if err := replaceEmpty(ms, path); err != nil {
			return err
		}
		log.Info("pinned VIP membership map resized: refilled by the first pass")
		return nil
	}
	if name == "conntrack" {
		m, err := newUnpinned(ms)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		defer m.Close()
		placed, displaced, err := convertConntrack(old, m)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", path, err)
		}
		if err := replacePin(m, path); err != nil {
			return err
		}
		args := []any{"entries", placed, "displaced", displaced, "from_type", old.Type().String(),
			"from_max_entries", old.MaxEntries(), "to_buckets", ms.MaxEntries}
		if displaced > 0 {
			// Those flows keep their backends through the ring while it does not change.
			log.Warn("migrated pinned conntrack; some entries found both their buckets full and displaced others: raise xdp.conntrack_size", args...)
		} else {
			log.Info("migrated pinned conntrack", args...)
		}
		return nil
	}
	if old.Type() == ms.Type && old.KeySize() == ms.KeySize && old.ValueSize() == ms.ValueSize && old.Flags() == ms.Flags && ms.InnerMap == nil {
		m, err := newUnpinned(ms)
		if err != nil {
			return fmt.Errorf("create %s: %w", name, err)
		}
		defer m.Close()
		copied, dropped, err := copyEntries(old, m)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", path, err)
		}
		if dropped > 0 && ms.Type != ebpf.LRUHash && ms.Type != ebpf.Array {
			return fmt.Errorf("migrate %s: %d entries do not fit %d: %w; raise the size back, or stop l4lb and remove %s (its state is lost)",
				path, dropped, ms.MaxEntries, ErrMigrate, path)
		}
		if err := replacePin(m, path); err != nil {
			return err
		}
		log.Info("migrated pinned map to its new size", "entries", copied, "dropped", dropped,
			"from_max_entries", old.MaxEntries(), "to_max_entries", ms.MaxEntries)
		return nil
	}
	return fmt.Errorf("pinned map %s: %v: %w (no converter for this change); run the release that made it, or stop l4lb and run `l4lb cleanup` to start afresh (established flows lose their backends)",
		path, diff, ErrMigrate)
}

// copyEntries copies old's entries into m, returning how many were copied and how many
// did not fit. Arrays copy the keys both have.
func copyEntries(old, m *ebpf.Map) (copied, dropped int, err error) {
	key := make([]byte, old.KeySize())
	val := make([]byte, old.ValueSize())
	if old.Type() == ebpf.Array {
		n := min(old.MaxEntries(), m.MaxEntries())
		if err := copyArray(old, m, n); err != nil {
			return 0, 0, err
		}
		return int(n), int(old.MaxEntries() - n), nil
	}
	it := old.Iterate()
	for it.Next(key, val) {
		if err := m.Update(key, val, ebpf.UpdateAny); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) || isFull(err) {
				dropped++
				continue
			}
			return copied, dropped, fmt.Errorf("write entry: %w", err)
		}
		copied++
	}
	if err := it.Err(); err != nil {
		return copied, dropped, fmt.Errorf("read entries: %w", err)
	}
	if m.Type() == ebpf.LRUHash && uint32(copied) > m.MaxEntries() {
		dropped += copied - int(m.MaxEntries())
	}
	return copied, dropped, nil
}

// copyArray copies entries 0..n-1 of one array map into another, in batches (a lookup
// per entry would cost a syscall each).
func copyArray(old, m *ebpf.Map, n uint32) error {
	const chunk = 4096
	vt := reflect.SliceOf(reflect.ArrayOf(int(old.ValueSize()), reflect.TypeFor[uint8]()))
	keys := make([]uint32, chunk)
	var cursor ebpf.MapBatchCursor
	for done := uint32(0); done < n; {
		vals := reflect.MakeSlice(vt, chunk, chunk).Interface()
		got, err := old.BatchLookup(&cursor, keys, vals, nil)
		last := errors.Is(err, ebpf.ErrKeyNotExist)
		if err != nil && !last {
			return fmt.Errorf("read entries %d..: %w", done, err)
		}
		take := min(uint32(got), n-done)
		if take > 0 {
			if _, err := m.BatchUpdate(keys[:take], reflect.ValueOf(vals).Slice(0, int(take)).Interface(), nil); err != nil {
				return fmt.Errorf("write entries %d..: %w", done, err)
			}
		}
		done += take
		if last || got == 0 {
			if done < n {
				return fmt.Errorf("read entries: %d of %d", done, n)
			}
			break
		}
	}
	return nil
}

func isFull(err error) bool { return errors.Is(err, unix.E2BIG) }

// convertPerVIPRings converts the previous layout's rings (an array of maps, one ARRAY of
// 32-bit backend ids per VIP id) into the flat rings array and ring_sel: each VIP's ring
// becomes half 0 of its selector. Rings are copied slot for slot, so every flow keeps
// its backend.
func convertPerVIPRings(spec *ebpf.CollectionSpec, old *ebpf.Map, dir string) (int, error) {
	vips, err := ebpf.LoadPinnedMap(filepath.Join(dir, "vips"), nil)
	if err != nil {
		return 0, fmt.Errorf("open pinned vips: %w", err)
	}
	defer vips.Close()
	selSpec := spec.Maps["ring_sel"].Copy()
	sel, err := ebpf.NewMapWithOptions(selSpec, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		return 0, fmt.Errorf("create ring_sel: %w", err)
	}
	defer sel.Close()
	rings, err := newUnpinned(spec.Maps["rings"])
	if err != nil {
		return 0, fmt.Errorf("create rings: %w", err)
	}
	defer rings.Close()

	var (
		k    xdplbVipKey
		meta xdplbVipMeta
		ids  []uint32
	)
	it := vips.Iterate()
	for it.Next(&k, &meta) {
		ids = append(ids, meta.Id)
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("read vips: %w", err)
	}
	slices.Sort(ids)
	next := uint32(0)
	n := 0
	for _, id := range ids {
		var innerID uint32
		if err := old.Lookup(id, &innerID); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue // no ring yet: the controller writes one
			}
			return n, fmt.Errorf("read ring of vip %d: %w", id, err)
		}
		inner, err := ebpf.NewMapFromID(ebpf.MapID(innerID))
		if err != nil {
			return n, fmt.Errorf("open ring of vip %d: %w", id, err)
		}
		size := inner.MaxEntries()
		table := make([]uint32, size)
		keys := make([]uint32, size)
		var cursor ebpf.MapBatchCursor
		got := 0
		for got < int(size) {
			c, err := inner.BatchLookup(&cursor, keys[got:], table[got:], nil)
			got += c
			if errors.Is(err, ebpf.ErrKeyNotExist) || c == 0 {
				break
			}
			if err != nil {
				inner.Close()
				return n, fmt.Errorf("read ring of vip %d: %w", id, err)
			}
		}
		inner.Close()
		if got != int(size) {
			return n, fmt.Errorf("read ring of vip %d: %d of %d slots", id, got, size)
		}
		blocks, err := packRing(table)
		if err != nil {
			return n, fmt.Errorf("ring of vip %d: %w", id, err)
		}
		if uint64(next)+uint64(len(blocks)) > uint64(rings.MaxEntries()) {
			return n, fmt.Errorf("rings of %d vips need more than the %d blocks of the new rings array: %w; raise the ring memory",
				len(ids), rings.MaxEntries(), ErrMigrate)
		}
		bkeys := make([]uint32, len(blocks))
		for i := range bkeys {
			bkeys[i] = next + uint32(i)
		}
		if _, err := rings.BatchUpdate(bkeys, blocks, nil); err != nil {
			return n, fmt.Errorf("write ring of vip %d: %w", id, err)
		}
		s := xdplbRingSelect{}
		s.Half[0].Block, s.Half[0].Size = next, size
		if err := sel.Put(id, &s); err != nil {
			return n, fmt.Errorf("write ring selector of vip %d: %w", id, err)
		}
		next += uint32(len(blocks))
		n++
	}
	if err := replacePin(rings, filepath.Join(dir, "rings")); err != nil {
		return n, err
	}
	return n, nil
}
