package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/limits"
)

// The flattened IPv4 deny list (bpf/xdp_maps.h deny4_dir, DIR-24-8 style): one u16 per /24
// of the address space (four to an array value; in memory a plain little-endian u16
// array, 32 MiB). Bits 0-4 hold 1 + the length of the longest listed prefix of length
// <= 24 that covers the whole /24 (0: none); bit 5+(L-25) says that prefixes of length L
// (25 to 32) lie inside it: the program looks the source up in deny4_counts (a hash of
// every listed prefix) at each such length, longest first, then takes the owner. The
// trie stays the list of record; deny4_counts holds the drops the array decided.
//
// The loader keeps the array in step with the trie: adding a prefix of length L <= 24
// raises the owner of each of its /24s to L where it was shorter; deleting it gives its
// /24s (those it owned) its longest listed ancestor, which is the same for all of them.
// A longer prefix sets its length's bit; the loader counts the prefixes of each length
// in each /24 (deny4DirLong, rebuilt from the trie at start) to clear the bit with the last.
// All of it depends only on the set of listed prefixes, not on the order of the changes.

const (
	// deny4DirSize is the entries (one u16 per /24) of deny4_dir, four to a u64 value.
	deny4DirSize      = 4 * limits.Deny4DirEntries
	deny4DirLongShift = limits.Deny4DirLongShift
	deny4DirOwnerMask = limits.Deny4DirOwnerMask
	// prefilterDeny4Dir is PREFILTER_F_DENY4_DIR: deny4_dir is built and the program uses it.
	prefilterDeny4Dir = limits.FlagPrefilterDeny4Dir
	// deny4DirChunk entries are read and written at a time.
	deny4DirChunk = 1 << 16
)

// deny4DirTable is the array the expansion works on: the mmapped map, or a slice in tests.
type deny4DirTable interface {
	load(i uint32) uint16
	store(i uint32, v uint16)
}

func key4Addr(k xdplbDeny4Key) uint32 { return binary.BigEndian.Uint32(k.Addr[:]) }

func key4(addr uint32, bits int) xdplbDeny4Key {
	k := xdplbDeny4Key{Prefixlen: uint32(bits)}
	binary.BigEndian.PutUint32(k.Addr[:], addr&mask4(bits))
	return k
}

func mask4(bits int) uint32 {
	if bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

// deny4DirRange is the first /24 index and the number of /24s of a prefix of length <= 24.
func deny4DirRange(k xdplbDeny4Key) (uint32, uint32) {
	return key4Addr(k) >> 8, 1 << (24 - k.Prefixlen)
}

// deny4DirLongKey names a /24 and a prefix length above 24 in deny4DirLong counts.
func deny4DirLongKey(k xdplbDeny4Key) (uint32, uint32, uint16) {
	i := key4Addr(k) >> 8
	return i<<3 | (k.Prefixlen - 25), i, 1 << (uint32(deny4DirLongShift) + k.Prefixlen - 25)
}

// deny4DirAdd records a prefix that was not listed; long counts the prefixes longer than /24
// by /24 and length.
func deny4DirAdd(t deny4DirTable, k xdplbDeny4Key, long map[uint32]uint32) {
	if k.Prefixlen > 24 {
		lk, i, bit := deny4DirLongKey(k)
		long[lk]++
		t.store(i, t.load(i)|bit)
		return
	}
	lo, n := deny4DirRange(k)
	own := uint16(k.Prefixlen + 1)
	for i := lo; i < lo+n; i++ {
		v := t.load(i)
		if v&deny4DirOwnerMask < own {
			t.store(i, v&^deny4DirOwnerMask|own)
		}
	}
}

// deny4DirDelete records that a listed prefix is gone. listed says whether a prefix of length
// <= 24 is (still) listed; it is asked about k's ancestors only.
func deny4DirDelete(t deny4DirTable, k xdplbDeny4Key, listed func(xdplbDeny4Key) bool, long map[uint32]uint32) {
	if k.Prefixlen > 24 {
		lk, i, bit := deny4DirLongKey(k)
		if long[lk] > 1 {
			long[lk]--
			return
		}
		delete(long, lk)
		t.store(i, t.load(i)&^bit)
		return
	}
	var anc uint16 // 1 + the length of the longest listed ancestor, 0: none
	for l := int(k.Prefixlen) - 1; l >= 0; l-- {
		if listed(key4(key4Addr(k), l)) {
			anc = uint16(l) + 1
			break
		}
	}
	lo, n := deny4DirRange(k)
	own := uint16(k.Prefixlen + 1)
	for i := lo; i < lo+n; i++ {
		if v := t.load(i); v&deny4DirOwnerMask == own {
			t.store(i, v&^deny4DirOwnerMask|anc)
		}
	}
}

// deny4DirView reads and writes the mmapped deny4_dir in chunks, writing back the ones it
// changed on flush. Only the loader writes the array (under denyMu), one aligned u16 at a
// time, so the program sees an entry before or after a change.
//
// The kernel maps a BPF array's pages all at once (remap_vmalloc_range), so a mapping
// kept open would count its 32 MiB in the daemon's resident memory: the view maps the
// array for one change and flush unmaps it.
type deny4DirView struct {
	mem    []byte
	chunks map[uint32][]byte
	dirty  map[uint32]bool
	err    error
}

func newDeny4DirView(m *ebpf.Map) (*deny4DirView, error) {
	mem, err := unix.Mmap(m.FD(), 0, int(deny4DirSize)*2, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map deny4_dir: %w", err)
	}
	return &deny4DirView{mem: mem, chunks: map[uint32][]byte{}, dirty: map[uint32]bool{}}, nil
}

func (v *deny4DirView) chunk(i uint32) []byte {
	c := i / deny4DirChunk
	b, ok := v.chunks[c]
	if !ok {
		b = make([]byte, deny4DirChunk*2)
		copy(b, v.mem[c*deny4DirChunk*2:])
		v.chunks[c] = b
	}
	return b
}

func (v *deny4DirView) load(i uint32) uint16 {
	return binary.LittleEndian.Uint16(v.chunk(i)[i%deny4DirChunk*2:])
}

func (v *deny4DirView) store(i uint32, x uint16) {
	binary.LittleEndian.PutUint16(v.chunk(i)[i%deny4DirChunk*2:], x)
	v.dirty[i/deny4DirChunk] = true
}

// flush writes the changed entries and unmaps the array; the view is done after it.
func (v *deny4DirView) flush() error {
	defer func() { _ = unix.Munmap(v.mem) }()
	if v.err != nil {
		return v.err
	}
	for c := range v.dirty {
		// Entries change one u16 at a time (one aligned store), never through a state
		// the table never had.
		b := v.chunks[c]
		for j := uint32(0); j < deny4DirChunk; j++ {
			off := (c*deny4DirChunk + j) * 2
			want := binary.LittleEndian.Uint16(b[j*2:])
			// An aligned uint16 through a pointer: one load, one store (amd64 and arm64 are
			// little-endian, like the entries).
			p := (*uint16)(unsafe.Pointer(&v.mem[off]))
			if *p != want {
				*p = want
			}
		}
		delete(v.dirty, c)
	}
	return nil
}

// listed4 says whether the trie lists prefix k, asking deny4_counts, which holds the same.
func (d *Dataplane) listed4(k xdplbDeny4Key) bool {
	var v xdplbDenyValue
	return d.objs.Deny4Counts.Lookup(&k, &v) == nil
}

// deny4DirAdded records prefixes newly added to the trie (each once): their counters, then
// the array (which must not point at a counter not yet written).
func (d *Dataplane) deny4DirAdded(keys []xdplbDeny4Key) error {
	if !d.deny4DirReady {
		return nil
	}
	if err := batchUpdate(d.objs.Deny4Counts, keys); err != nil {
		return fmt.Errorf("add ipv4 deny counters: %w", err)
	}
	v, err := newDeny4DirView(d.objs.Deny4Dir)
	if err != nil {
		return err
	}
	// Shortest first: a /24 takes its final owner in one write.
	slices.SortFunc(keys, func(a, b xdplbDeny4Key) int { return int(a.Prefixlen) - int(b.Prefixlen) })
	for _, k := range keys {
		deny4DirAdd(v, k, d.deny4DirLong)
	}
	return v.flush()
}

// deny4DirDeleted records one prefix deleted from the trie.
func (d *Dataplane) deny4DirDeleted(k xdplbDeny4Key) error {
	if !d.deny4DirReady {
		return nil
	}
	v, err := newDeny4DirView(d.objs.Deny4Dir)
	if err != nil {
		return err
	}
	deny4DirDelete(v, k, d.listed4, d.deny4DirLong)
	if err := v.flush(); err != nil {
		return err
	}
	if err := d.objs.Deny4Counts.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete ipv4 deny counter: %w", err)
	}
	return nil
}

// syncDeny4Dir reads the trie at start: it counts the longer prefixes (deny4DirLong) and, when
// the loader finds deny4_dir and deny4_counts not built for it (a first start, or maps
// left by a release without them), builds them from the trie, keeping the counters of
// prefixes still listed.
func (d *Dataplane) syncDeny4Dir() error {
	var on uint32
	if err := d.objs.PrefilterOn.Lookup(uint32(0), &on); err != nil {
		return fmt.Errorf("read prefilter_on: %w", err)
	}
	var keys []xdplbDeny4Key
	if err := batchRead(d.objs.Deny4, func(k xdplbDeny4Key, _ uint64) { keys = append(keys, k) }); err != nil {
		return fmt.Errorf("read ipv4 deny list: %w", err)
	}
	if on&prefilterDeny4Dir == 0 {
		return d.rebuildDeny4Dir(keys)
	}
	d.deny4DirLong = map[uint32]uint32{}
	for _, k := range keys {
		if k.Prefixlen > 24 {
			lk, _, _ := deny4DirLongKey(k)
			d.deny4DirLong[lk]++
		}
	}
	d.deny4DirReady = true
	return nil
}

// buildDeny4Dir builds deny4_dir and deny4_counts from the trie again.
func (d *Dataplane) buildDeny4Dir() error {
	var keys []xdplbDeny4Key
	if err := batchRead(d.objs.Deny4, func(k xdplbDeny4Key, _ uint64) { keys = append(keys, k) }); err != nil {
		return fmt.Errorf("read ipv4 deny list: %w", err)
	}
	return d.rebuildDeny4Dir(keys)
}

// rebuildDeny4Dir makes deny4_dir, deny4_counts and deny4DirLong agree with the trie's keys.
func (d *Dataplane) rebuildDeny4Dir(keys []xdplbDeny4Key) error {
	d.deny4DirLong = map[uint32]uint32{}
	listed := make(map[xdplbDeny4Key]bool, len(keys))
	for _, k := range keys {
		listed[k] = true
	}
	var stale []xdplbDeny4Key
	have := map[xdplbDeny4Key]bool{}
	if err := batchRead(d.objs.Deny4Counts, func(k xdplbDeny4Key, _ uint64) {
		if listed[k] {
			have[k] = true
		} else {
			stale = append(stale, k)
		}
	}); err != nil {
		return fmt.Errorf("read ipv4 deny counters: %w", err)
	}
	var add []xdplbDeny4Key
	for _, k := range keys {
		if !have[k] {
			add = append(add, k)
		}
	}
	if err := batchUpdate(d.objs.Deny4Counts, add); err != nil {
		return fmt.Errorf("add ipv4 deny counters: %w", err)
	}
	v, err := newDeny4DirView(d.objs.Deny4Dir)
	if err != nil {
		return err
	}
	if !d.deny4DirFresh {
		// The array may hold anything: rewrite it whole.
		for c := uint32(0); c < deny4DirSize/deny4DirChunk; c++ {
			v.chunks[c] = make([]byte, deny4DirChunk*2)
			v.dirty[c] = true
		}
	}
	d.deny4DirFresh = false
	slices.SortFunc(keys, func(a, b xdplbDeny4Key) int { return int(a.Prefixlen) - int(b.Prefixlen) })
	for _, k := range keys {
		deny4DirAdd(v, k, d.deny4DirLong)
	}
	if err := v.flush(); err != nil {
		return err
	}
	// Counters of prefixes no longer listed go once nothing points at them.
	for _, k := range stale {
		if err := d.objs.Deny4Counts.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete ipv4 deny counter: %w", err)
		}
	}
	d.deny4DirReady = true
	if len(keys) > 0 {
		d.log.Info("built the flattened ipv4 deny list from the trie", "prefixes", len(keys))
	}
	return nil
}
