// Package memdp is an in-memory data plane for the controller's tests: it keeps VIPs,
// rings and backends as XDP's maps do, survives a controller restart like pinned maps,
// and checks after every write that no ring names a backend it does not hold.
package memdp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/l4lb/l4lb/pkg/lb"
)

// ErrBlackHole is recorded when a write leaves a ring naming a missing backend.
var ErrBlackHole = errors.New("ring names a backend the data plane does not hold")

// Dataplane is the in-memory data plane. Its zero value is not usable; use New.
type Dataplane struct {
	mu       sync.Mutex
	ringSize uint32
	maxID    uint32
	vips     map[lb.VIPKey]lb.ProgrammedVIP
	rings    map[uint32][]uint32
	backends map[uint32]netip.Addr
	writes   int
	// Violations lists every invariant a write broke, in order.
	violations []error
	// FailNext makes the next n writes fail (to test retries).
	failNext int
	fwd      lb.Forwarding
	attached map[string]string
}

// New returns an empty data plane with rings of ringSize slots (a prime) and backend ids
// up to maxID.
func New(ringSize, maxID uint32) *Dataplane {
	return &Dataplane{ringSize: ringSize, maxID: maxID, vips: map[lb.VIPKey]lb.ProgrammedVIP{},
		rings: map[uint32][]uint32{}, backends: map[uint32]netip.Addr{}}
}

var _ lb.Dataplane = (*Dataplane)(nil)

// Info implements lb.Dataplane.
func (d *Dataplane) Info() lb.Info {
	return lb.Info{Mode: "memory", Reason: "tests", MaxBackendID: d.maxID}
}

// Programmed implements lb.Programmer.
func (d *Dataplane) Programmed() (lb.Programmed, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := lb.Programmed{VIPs: map[lb.VIPKey]lb.ProgrammedVIP{}, Backends: map[uint32]netip.Addr{}}
	for k, v := range d.vips {
		_, v.Ready = d.rings[v.ID]
		p.VIPs[k] = v
	}
	for id, a := range d.backends {
		p.Backends[id] = a
	}
	return p, nil
}

func (d *Dataplane) write() error {
	if d.failNext > 0 {
		d.failNext--
		return errors.New("memdp: injected failure")
	}
	d.writes++
	return nil
}

// check records every ring slot that names a backend the data plane does not hold. A VIP
// whose entry is present serves from its ring; a ring without an entry serves nothing.
func (d *Dataplane) check(op string) {
	for k, v := range d.vips {
		for _, id := range d.rings[v.ID] {
			if id == 0 {
				continue
			}
			if _, ok := d.backends[id]; !ok {
				d.violations = append(d.violations, fmt.Errorf("after %s: vip %s: ring names backend %d: %w", op, k, id, ErrBlackHole))
				break
			}
		}
	}
}

// SetVIP implements lb.Programmer: backends, then the ring swapped whole, then the entry.
func (d *Dataplane) SetVIP(v lb.VIP) error {
	if err := v.Validate(); err != nil {
		return err
	}
	size := d.ringSize
	if v.RingSize != 0 {
		size = v.RingSize
	}
	table, err := lb.MaglevTable(v.Backends, size)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range v.Backends {
		if b.ID > d.maxID {
			return fmt.Errorf("backend id %d: above %d", b.ID, d.maxID)
		}
		if err := d.write(); err != nil {
			return err
		}
		d.backends[b.ID] = b.Addr
		d.check("set backend")
	}
	pv, ok := d.vips[v.Key]
	if !ok {
		used := map[uint32]bool{}
		for _, o := range d.vips {
			used[o.ID] = true
		}
		for used[pv.ID] {
			pv.ID++
		}
	}
	if err := d.write(); err != nil {
		return err
	}
	d.rings[pv.ID] = table
	d.check("swap ring")
	if err := d.write(); err != nil {
		return err
	}
	pv.Flags, pv.Ready = v.Flags, true
	d.vips[v.Key] = pv
	d.check("set vip")
	return nil
}

// DeleteVIP implements lb.Programmer.
func (d *Dataplane) DeleteVIP(k lb.VIPKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	pv, ok := d.vips[k]
	if !ok {
		return fmt.Errorf("delete vip %s: not found", k)
	}
	if err := d.write(); err != nil {
		return err
	}
	delete(d.vips, k)
	delete(d.rings, pv.ID)
	d.check("delete vip")
	return nil
}

// DeleteBackend implements lb.Programmer.
func (d *Dataplane) DeleteBackend(id uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.write(); err != nil {
		return err
	}
	delete(d.backends, id)
	d.check(fmt.Sprintf("delete backend %d", id))
	return nil
}

// Ring returns a copy of the ring the VIP serves from (nil if none).
func (d *Dataplane) Ring(k lb.VIPKey) []uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	pv, ok := d.vips[k]
	if !ok {
		return nil
	}
	return slices.Clone(d.rings[pv.ID])
}

// Writes counts successful writes so far.
func (d *Dataplane) Writes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.writes
}

// Violations returns the invariant violations seen so far.
func (d *Dataplane) Violations() []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.violations)
}

// FailNext makes the next n writes fail.
func (d *Dataplane) FailNext(n int) {
	d.mu.Lock()
	d.failNext = n
	d.mu.Unlock()
}

// Corrupt removes a backend entry behind the controller's back (tests of the in-sync
// check).
func (d *Dataplane) Corrupt(id uint32) {
	d.mu.Lock()
	delete(d.backends, id)
	d.mu.Unlock()
}

// SetForwarding implements lb.Dataplane.
func (d *Dataplane) SetForwarding(f lb.Forwarding) error {
	d.mu.Lock()
	d.fwd = f
	d.mu.Unlock()
	return nil
}

// Attach implements lb.Dataplane.
func (d *Dataplane) Attach(_ context.Context, ifaces []string) (map[string]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attached = map[string]string{}
	for _, i := range ifaces {
		d.attached[i] = "memory"
	}
	return d.attached, nil
}

// Detach implements lb.Dataplane.
func (d *Dataplane) Detach(context.Context) error {
	d.mu.Lock()
	d.attached = nil
	d.mu.Unlock()
	return nil
}

// Counters implements lb.Dataplane (all zero).
func (d *Dataplane) Counters() (lb.Counters, error) {
	return lb.Counters{VIPs: map[lb.VIPKey]lb.TrafficCounters{}, Backends: map[uint32]lb.TrafficCounters{}, Global: map[string]uint64{}}, nil
}

// Close implements lb.Dataplane.
func (d *Dataplane) Close() error { return nil }

// Unpin implements lb.Dataplane: forgets everything.
func (d *Dataplane) Unpin() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.vips = map[lb.VIPKey]lb.ProgrammedVIP{}
	d.rings = map[uint32][]uint32{}
	d.backends = map[uint32]netip.Addr{}
	return nil
}
