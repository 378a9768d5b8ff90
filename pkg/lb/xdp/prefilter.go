package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/internal/bpfobj"
	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/lb"
)

// The prefilter: source-prefix deny lists (one LPM trie per family, each prefix counting
// its drops; IPv4 flattened into a /24 array, prefilter_deny4dir.go), per-VIP allow lists and the
// per-VIP new-flow guard (bpf/prefilter.h).

// DenyEntry is one prefix of the deny list and the packets it dropped.
type DenyEntry struct {
	Prefix netip.Prefix
	Drops  uint64
}

// Policy is what the prefilter applies to one VIP.
type Policy struct {
	// Allow, when not empty, is the VIP's allow list: only sources inside one of these
	// prefixes reach it; others are dropped (drop_not_allowed).
	Allow []netip.Prefix
	// GuardRate is the new flows per second, per CPU, above which the VIP stops writing
	// conntrack entries for new flows (they are forwarded by the ring alone). 0: off.
	GuardRate uint32
	// GuardDropRate is the new flows per second, per CPU, above which new flows are
	// dropped. 0: off. When set it is above GuardRate.
	GuardDropRate uint32
}

// GuardCounters are a VIP's prefilter counters summed over CPUs.
type GuardCounters struct {
	Untracked uint64 // new flows forwarded without a conntrack entry (guard)
	Dropped   uint64 // new flows dropped above the guard's drop rate
	Denied    uint64 // packets from sources outside the allow list
}

func checkPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, fmt.Errorf("prefix %s: invalid", p)
	}
	if p.Addr().Is4In6() {
		return p, fmt.Errorf("prefix %s: ipv4-mapped ipv6 prefix; write it as ipv4", p)
	}
	return p.Masked(), nil
}

// denyKeys splits prefixes into the two tries' keys, checking every one first so that a
// bad prefix changes nothing.
func denyKeys(prefixes []netip.Prefix) (k4 []xdplbDeny4Key, k6 []xdplbDeny6Key, err error) {
	for _, p := range prefixes {
		p, err := checkPrefix(p)
		if err != nil {
			return nil, nil, err
		}
		if p.Addr().Is4() {
			k4 = append(k4, xdplbDeny4Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()})
		} else {
			k6 = append(k6, xdplbDeny6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()})
		}
	}
	return k4, k6, nil
}

// batchChunk bounds one BPF_MAP_*_BATCH call.
const batchChunk = 1 << 16

func batchUpdate[K any](m *ebpf.Map, keys []K) error {
	vals := make([]xdplbDenyValue, min(len(keys), batchChunk))
	for len(keys) > 0 {
		n := min(len(keys), batchChunk)
		if _, err := m.BatchUpdate(keys[:n], vals[:n], &ebpf.BatchOptions{ElemFlags: uint64(ebpf.UpdateAny)}); err != nil {
			return err
		}
		keys = keys[n:]
	}
	return nil
}

// addDeny adds keys not yet in m and returns those it added; listed prefixes keep their
// counters. A small batch inserts one by one with BPF_NOEXIST (a lookup would answer the
// longest match, not the exact prefix); a large one reads the trie once and
// batch-inserts the rest.
func addDeny[K comparable](m *ebpf.Map, keys []K) ([]K, error) {
	var add []K
	if len(keys) <= 4096 {
		for _, k := range keys {
			err := m.Update(&k, &xdplbDenyValue{}, ebpf.UpdateNoExist)
			if err == nil {
				add = append(add, k)
			} else if !errors.Is(err, ebpf.ErrKeyExist) {
				return add, err
			}
		}
		return add, nil
	}
	have := map[K]bool{}
	if err := batchRead(m, func(k K, _ uint64) { have[k] = true }); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if !have[k] {
			add = append(add, k)
			have[k] = true
		}
	}
	return add, batchUpdate(m, add)
}

// DenyAdd adds prefixes to the deny list with batch updates (a million prefixes load in
// seconds). Prefixes already listed keep their counters. A bad prefix changes nothing.
func (d *Dataplane) DenyAdd(prefixes []netip.Prefix) error {
	k4, k6, err := denyKeys(prefixes)
	if err != nil {
		return err
	}
	d.denyMu.Lock()
	defer d.denyMu.Unlock()
	added, err := addDeny(d.objs.Deny4, k4)
	if err != nil {
		// Part of a batch may have reached the trie: the array follows the trie again.
		if rerr := d.buildDeny4Dir(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("add ipv4 deny prefixes: %w", err)
	}
	if err := d.deny4DirAdded(added); err != nil {
		return fmt.Errorf("add ipv4 deny prefixes: %w", err)
	}
	if _, err := addDeny(d.objs.Deny6, k6); err != nil {
		return fmt.Errorf("add ipv6 deny prefixes: %w", err)
	}
	return d.refreshPrefilterOn()
}

// refreshPrefilterOn records which deny tries hold anything (map prefilter_on), so the
// program skips the lookup of an empty one.
func (d *Dataplane) refreshPrefilterOn() error {
	var on uint32
	for _, t := range []struct {
		m    *ebpf.Map
		flag uint32
		key  any
	}{{d.objs.Deny4, limits.FlagPrefilterDeny4, new(xdplbDeny4Key)}, {d.objs.Deny6, limits.FlagPrefilterDeny6, new(xdplbDeny6Key)}} {
		err := t.m.NextKey(nil, t.key)
		switch {
		case err == nil:
			on |= t.flag
		case !errors.Is(err, ebpf.ErrKeyNotExist):
			return fmt.Errorf("read deny list: %w", err)
		}
	}
	if d.deny4DirReady {
		on |= prefilterDeny4Dir
	}
	if err := d.objs.PrefilterOn.Put(uint32(0), on); err != nil {
		return fmt.Errorf("write prefilter_on: %w", err)
	}
	return nil
}

// DenyDelete removes prefixes from the deny list; prefixes not listed are ignored.
func (d *Dataplane) DenyDelete(prefixes []netip.Prefix) error {
	k4, k6, err := denyKeys(prefixes)
	if err != nil {
		return err
	}
	d.denyMu.Lock()
	defer d.denyMu.Unlock()
	for _, k := range k4 {
		// The trie (exact match), then the array, then the prefix's counter.
		err := d.objs.Deny4.Delete(&k)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("delete deny prefix: %w", err)
		}
		if err := d.deny4DirDeleted(k); err != nil {
			return err
		}
	}
	for _, k := range k6 {
		if err := d.objs.Deny6.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete deny prefix: %w", err)
		}
	}
	return d.refreshPrefilterOn()
}

// DenyList returns the deny list with each prefix's drops, sorted by prefix.
func (d *Dataplane) DenyList() ([]DenyEntry, error) {
	var out []DenyEntry
	// An IPv4 prefix counts the packets deny4_dir decided in deny4_counts.
	counts := map[xdplbDeny4Key]uint64{}
	if err := batchRead(d.objs.Deny4Counts, func(k xdplbDeny4Key, drops uint64) { counts[k] = drops }); err != nil {
		return nil, fmt.Errorf("read ipv4 deny counters: %w", err)
	}
	err := batchRead(d.objs.Deny4, func(k xdplbDeny4Key, drops uint64) {
		out = append(out, DenyEntry{Prefix: netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)), Drops: drops + counts[k]})
	})
	if err != nil {
		return nil, fmt.Errorf("read ipv4 deny list: %w", err)
	}
	err = batchRead(d.objs.Deny6, func(k xdplbDeny6Key, drops uint64) {
		out = append(out, DenyEntry{Prefix: netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen)), Drops: drops})
	})
	if err != nil {
		return nil, fmt.Errorf("read ipv6 deny list: %w", err)
	}
	slices.SortFunc(out, func(a, b DenyEntry) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, nil
}

// batchRead walks a deny trie with batch lookups.
func batchRead[K any](m *ebpf.Map, fn func(K, uint64)) error {
	keys := make([]K, 4096)
	vals := make([]xdplbDenyValue, 4096)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(keys[i], vals[i].Drops)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && n == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// SetPolicy sets the prefilter policy of a VIP. It is kept and written again whenever the
// VIP is (re)programmed, so it may be set before the VIP exists.
func (d *Dataplane) SetPolicy(k lb.VIPKey, p Policy) error {
	for i, a := range p.Allow {
		a, err := checkPrefix(a)
		if err != nil {
			return fmt.Errorf("vip %s allow list: %w", k, err)
		}
		if a.Addr().Is4() != k.Addr.Is4() {
			return fmt.Errorf("vip %s allow list: prefix %s is not of the vip's family", k, a)
		}
		p.Allow[i] = a
	}
	if p.GuardDropRate != 0 && p.GuardRate != 0 && p.GuardDropRate <= p.GuardRate {
		return fmt.Errorf("vip %s: guard drop rate %d must be above the guard rate %d", k, p.GuardDropRate, p.GuardRate)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.policies == nil {
		d.policies = map[lb.VIPKey]Policy{}
	}
	d.policies[k] = p
	entries, err := d.vipEntries()
	if err != nil {
		return err
	}
	if meta, ok := entries[vipKey(k)]; ok {
		return d.writePolicy(meta.Id, p)
	}
	return nil
}

// writePolicy writes a VIP id's allow list (removing entries of an earlier VIP with the
// same id) and then its policy. Called with d.mu held.
func (d *Dataplane) writePolicy(id uint32, p Policy) error {
	want := map[xdplbAllowKey]bool{}
	for _, a := range p.Allow {
		k := xdplbAllowKey{Prefixlen: 32 + uint32(a.Bits()), VipId: id}
		k.Addr, _ = bpfobj.Addr16(a.Addr())
		want[k] = true
	}
	if d.allowByID == nil {
		// What the pinned allow_list holds, read once; writePolicy keeps it current.
		d.allowByID = map[uint32]map[xdplbAllowKey]bool{}
		var (
			k xdplbAllowKey
			v uint32
		)
		it := d.objs.AllowList.Iterate()
		for it.Next(&k, &v) {
			if d.allowByID[k.VipId] == nil {
				d.allowByID[k.VipId] = map[xdplbAllowKey]bool{}
			}
			d.allowByID[k.VipId][k] = true
		}
		if err := it.Err(); err != nil {
			d.allowByID = nil
			return fmt.Errorf("read allow list: %w", err)
		}
	}
	have := d.allowByID[id]
	var stale []xdplbAllowKey
	for k := range have {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	for k := range want {
		if have[k] {
			continue
		}
		if err := d.objs.AllowList.Put(&k, uint32(1)); err != nil {
			return fmt.Errorf("write allow list of vip %d: %w", id, err)
		}
		if have == nil {
			have = map[xdplbAllowKey]bool{}
			d.allowByID[id] = have
		}
		have[k] = true
	}
	pol := xdplbVipPolicy{GuardRate: p.GuardRate, GuardDropRate: p.GuardDropRate}
	if len(p.Allow) > 0 {
		pol.Flags |= limits.FlagVIPPolicyAllow
	}
	if err := d.objs.VipPolicies.Put(id, &pol); err != nil {
		return fmt.Errorf("write policy of vip %d: %w", id, err)
	}
	for _, k := range stale {
		if err := d.objs.AllowList.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("clear allow list of vip %d: %w", id, err)
		}
		delete(have, k)
	}
	return nil
}

// policyFor is the policy to write for VIP k (zero when none was set). d.mu held.
func (d *Dataplane) policyFor(k lb.VIPKey) Policy { return d.policies[k] }

// GuardCounters returns the prefilter counters of the VIP with id.
func (d *Dataplane) GuardCounters(id uint32) (GuardCounters, error) {
	var per []xdplbVipGuard
	if err := d.objs.VipGuards.Lookup(id, &per); err != nil {
		return GuardCounters{}, fmt.Errorf("read guard counters of vip %d: %w", id, err)
	}
	var c GuardCounters
	for _, p := range per {
		c.Untracked += p.Untracked
		c.Dropped += p.Dropped
		c.Denied += p.Denied
	}
	return c, nil
}
