package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
)

// vipCache is what this process wrote to the vips, vip_addrs and backends maps, so that
// SetVIP and DeleteVIP cost a few map writes and no read of the whole vips map (with
// 10,000 VIPs a read per call made a full load quadratic). It is read from the maps at
// Load. SetVIP always writes the VIP's entries (a lost entry is repaired by the next
// SetVIP), and skips only backends this cache holds; Node.Programmed refreshes those every
// controller pass. vips, ids and addrs are guarded by Dataplane.mu; backends by bmu.
type vipCache struct {
	vips   map[xdplbVipKey]xdplbVipMeta
	ids    map[uint32]bool        // VIP ids in use, or reserved by a SetVIP in progress
	addrs  map[xdplbVipKey]int    // VIP addresses (vipAddrKey) -> VIPs on them
	nextID uint32                 // where the search for a free id starts
	byID   map[uint32]xdplbVipKey // the VIP each id in vips names (events, traces)

	bmu      sync.Mutex
	backends map[uint32]netip.Addr
	// gone: the last address of each deleted backend id not given again, so that an
	// event read just after a backend left (a flow moved off it) still names it.
	gone map[uint32]netip.Addr
}

func (c *vipCache) reset(vips map[xdplbVipKey]xdplbVipMeta, backends map[uint32]netip.Addr) {
	c.vips = vips
	c.ids = map[uint32]bool{}
	c.addrs = map[xdplbVipKey]int{}
	c.byID = map[uint32]xdplbVipKey{}
	for k, m := range vips {
		c.ids[m.Id] = true
		c.byID[m.Id] = k
		c.addrs[addrKeyOf(k)]++
		// A restarted daemon goes on after the highest id in use, not from 0.
		c.nextID = max(c.nextID, (m.Id+1)%MaxVIPs)
	}
	c.setBackends(backends)
}

// setBackends replaces the backends known to be written (Node.Programmed has just read
// them), so a backend lost behind our back is written again by the next SetVIP.
func (c *vipCache) setBackends(backends map[uint32]netip.Addr) {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	c.backends = make(map[uint32]netip.Addr, len(backends))
	for id, a := range backends {
		c.backends[id] = a
		delete(c.gone, id)
	}
}

func addrKeyOf(k xdplbVipKey) xdplbVipKey { return xdplbVipKey{Addr: k.Addr, Family: k.Family} }

func (c *vipCache) allocID() (uint32, bool) {
	for i := uint32(0); i < MaxVIPs; i++ {
		id := (c.nextID + i) % MaxVIPs
		if !c.ids[id] {
			c.ids[id] = true
			c.nextID = id + 1
			return id, true
		}
	}
	return 0, false
}

// releaseID frees a VIP id. The search for a free id goes on from where it was, so an id
// comes back only after the others have been handed out: a packet that read the old
// VIP's entry just before it went (and its ring_sel, counters, vip_backends pairs under
// that id) is long done by then.
func (c *vipCache) releaseID(id uint32) {
	delete(c.ids, id)
}

func (c *vipCache) add(k xdplbVipKey, m xdplbVipMeta) {
	if _, ok := c.vips[k]; !ok {
		c.addrs[addrKeyOf(k)]++
	}
	if old, ok := c.vips[k]; ok && old.Id != m.Id {
		delete(c.byID, old.Id)
	}
	c.vips[k] = m
	c.ids[m.Id] = true
	if c.byID == nil {
		c.byID = map[uint32]xdplbVipKey{}
	}
	c.byID[m.Id] = k
}

func (c *vipCache) remove(k xdplbVipKey) {
	m, ok := c.vips[k]
	if !ok {
		return
	}
	delete(c.vips, k)
	delete(c.byID, m.Id)
	c.releaseID(m.Id)
	ak := addrKeyOf(k)
	if c.addrs[ak]--; c.addrs[ak] <= 0 {
		delete(c.addrs, ak)
	}
}

// backendAddr is the address written for backend id (zero if none).
func (c *vipCache) backendAddr(id uint32) netip.Addr {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	return c.backends[id]
}

// backendName is the address of backend id, or the last one a deleted id had.
func (c *vipCache) backendName(id uint32) netip.Addr {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	if a, ok := c.backends[id]; ok {
		return a
	}
	return c.gone[id]
}

func (c *vipCache) hasBackend(id uint32, a netip.Addr) bool {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	got, ok := c.backends[id]
	return ok && got == a
}

func (c *vipCache) setBackend(id uint32, a netip.Addr) {
	c.bmu.Lock()
	defer c.bmu.Unlock()
	if c.backends == nil {
		c.backends = map[uint32]netip.Addr{}
	}
	if c.gone == nil {
		c.gone = map[uint32]netip.Addr{}
	}
	if a.IsValid() {
		c.backends[id] = a
		delete(c.gone, id)
	} else if old, ok := c.backends[id]; ok {
		c.gone[id] = old
		delete(c.backends, id)
	}
}

// vipEntries reads the vips map, key -> meta, in batches.
func (d *Dataplane) vipEntries() (map[xdplbVipKey]xdplbVipMeta, error) {
	out := map[xdplbVipKey]xdplbVipMeta{}
	const chunk = 1024
	keys := make([]xdplbVipKey, chunk)
	vals := make([]xdplbVipMeta, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := d.objs.Vips.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			out[keys[i]] = vals[i]
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && n == 0) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read vips: %w", err)
		}
	}
}

// refreshVIPCache re-reads the vips and backends maps into the cache.
func (d *Dataplane) refreshVIPCache() error {
	vips, err := d.vipEntries()
	if err != nil {
		return err
	}
	bes, err := d.Backends()
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.vc.reset(vips, bes)
	d.mu.Unlock()
	return nil
}
