package socklb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/monitor"
)

// maxClientsPerVIP bounds the aggregation: a VIP's further new clients are counted in
// Other instead of getting a row.
const maxClientsPerVIP = 1024

// eventSize is sizeof(struct sock_event) in bpf/sock_lb.c.
const eventSize = 72

// Event kinds (struct sock_event kind).
const (
	// KindConnect: a sampled connect translated to a backend.
	KindConnect uint8 = 0
	// KindNoBackend: a connect or datagram to a VIP with no usable backend, left as it
	// was (it takes the network path to the VIP). Sent only while the monitor asks for
	// drops.
	KindNoBackend uint8 = 1
)

// Event is one event of the socket LB.
type Event struct {
	Kind      uint8
	Connect   bool // a connect (else an unconnected UDP datagram)
	CgroupID  uint64
	PID       uint32
	VIPID     uint32
	BackendID uint32 // KindConnect
	Comm      string
	Proto     uint8
	// VIP is the address and port the socket named.
	VIP  netip.AddrPort
	Time time.Time // when the hook ran
	CPU  uint32
}

// decodeEvent reads an event; offset turns the program's monotonic clock into wall time
// (monitor.MonotonicOffset).
func decodeEvent(b []byte, offset time.Duration) (Event, error) {
	if len(b) < eventSize {
		return Event{}, fmt.Errorf("socket event of %d bytes, want %d", len(b), eventSize)
	}
	le := binary.LittleEndian
	comm := b[20:36]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	e := Event{CgroupID: le.Uint64(b[0:]), PID: le.Uint32(b[8:]), VIPID: le.Uint32(b[12:]),
		BackendID: le.Uint32(b[16:]), Comm: string(comm), Kind: b[36], Proto: b[37], Connect: b[39] != 0,
		Time: time.Unix(0, int64(le.Uint64(b[40:]))+int64(offset)), CPU: le.Uint32(b[68:])}
	port := binary.BigEndian.Uint16(b[64:])
	switch b[38] {
	case limits.FamilyV4:
		e.VIP = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[48:52])), port)
	case limits.FamilyV6:
		e.VIP = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[48:64])), port)
	}
	return e, nil
}

// maxPIDsPerClient bounds the distinct pids remembered per client row.
const maxPIDsPerClient = 1024

// Client is a local program seen connecting to a VIP: its command name and cgroup (a
// program that runs as many short processes, like curl from a script, is one row), the
// last pid seen and how many distinct pids made the sampled connects.
type Client struct {
	Comm     string `json:"comm"`
	CgroupID uint64 `json:"cgroup_id"`
	LastPID  uint32 `json:"last_pid"`
	PIDs     int    `json:"pids"` // distinct, counted up to 1024
	Connects uint64 `json:"sampled_connects"`
}

type clientKey struct {
	comm   string
	cgroup uint64
}

type clientRow struct {
	connects uint64
	lastPID  uint32
	pids     map[uint32]struct{}
}

// clients aggregates sampled connects per VIP id.
type clients struct {
	mu    sync.Mutex
	byVIP map[uint32]map[clientKey]*clientRow
	other map[uint32]uint64
	total uint64
}

func newClients() *clients {
	return &clients{byVIP: map[uint32]map[clientKey]*clientRow{}, other: map[uint32]uint64{}}
}

func (c *clients) add(e Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total++
	m := c.byVIP[e.VIPID]
	if m == nil {
		m = map[clientKey]*clientRow{}
		c.byVIP[e.VIPID] = m
	}
	k := clientKey{e.Comm, e.CgroupID}
	r := m[k]
	if r == nil {
		if len(m) >= maxClientsPerVIP {
			c.other[e.VIPID]++
			return
		}
		r = &clientRow{pids: map[uint32]struct{}{}}
		m[k] = r
	}
	r.connects++
	r.lastPID = e.PID
	if len(r.pids) < maxPIDsPerClient {
		r.pids[e.PID] = struct{}{}
	}
}

// top returns the n clients with the most sampled connects to VIP id (all when n <= 0),
// and how many sampled connects came from clients beyond the table's bound.
func (c *clients) top(id uint32, n int) ([]Client, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Client
	for k, r := range c.byVIP[id] {
		out = append(out, Client{Comm: k.comm, CgroupID: k.cgroup, LastPID: r.lastPID, PIDs: len(r.pids), Connects: r.connects})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Connects != out[j].Connects {
			return out[i].Connects > out[j].Connects
		}
		if out[i].Comm != out[j].Comm {
			return out[i].Comm < out[j].Comm
		}
		return out[i].CgroupID < out[j].CgroupID
	})
	var rest uint64
	if n > 0 && len(out) > n {
		for _, cl := range out[n:] {
			rest += cl.Connects
		}
		out = out[:n]
	}
	return out, c.other[id] + rest
}

// forget drops what was sampled for VIP id (its VIP was removed or the id reused).
func (c *clients) forget(id uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byVIP, id)
	delete(c.other, id)
}

// SetEventSink makes Run hand every event it reads to fn too (nil: none), from Run's
// goroutine: fn must not block.
func (d *Dataplane) SetEventSink(fn func(Event)) {
	d.mu.Lock()
	d.sink = fn
	d.mu.Unlock()
}

// Run reads the program's events until ctx is done: sampled connects go into the client
// table, and every event to the sink.
func (d *Dataplane) Run(ctx context.Context) error {
	r, err := ringbuf.NewReader(d.objs.SockEvents)
	if err != nil {
		return fmt.Errorf("read socket events: %w", err)
	}
	go func() {
		<-ctx.Done()
		r.Close()
	}()
	offset := monitor.MonotonicOffset()
	var rec ringbuf.Record
	for {
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read socket events: %w", err)
		}
		e, err := decodeEvent(rec.RawSample, offset)
		if err != nil {
			d.log.Warn("bad socket event", "error", err)
			continue
		}
		if e.Kind == KindConnect {
			d.clients.add(e)
		}
		d.mu.Lock()
		sink := d.sink
		d.mu.Unlock()
		if sink != nil {
			sink(e)
		}
	}
}

// SetMonitor turns the no-backend events on or off and sets their per-CPU rate (events a
// second; 0: no limit).
func (d *Dataplane) SetMonitor(drops bool, rate uint32) error {
	var flags uint32
	if drops {
		flags = limits.MonFlagDrops
	}
	if err := d.objs.MonitorRate.Set(rate); err != nil {
		return fmt.Errorf("set socket monitor rate: %w", err)
	}
	if err := d.objs.MonitorFlags.Set(flags); err != nil {
		return fmt.Errorf("set socket monitor flags: %w", err)
	}
	return nil
}

// MonitorLost sums, over CPUs, the no-backend events not sent: over the rate, and for
// want of room in the ring.
func (d *Dataplane) MonitorLost() (rateLimited, ringFull uint64, err error) {
	var per []socklbMonCpu
	if err := d.objs.SockMonitorState.Lookup(uint32(0), &per); err != nil {
		return 0, 0, fmt.Errorf("read socket monitor state: %w", err)
	}
	for _, c := range per {
		rateLimited += c.LostRate
		ringFull += c.LostRing
	}
	return rateLimited, ringFull, nil
}

// TopClients returns the n local clients that made the most sampled translated connects
// to VIP id, and the sampled connects of the clients not listed.
func (d *Dataplane) TopClients(id uint32, n int) ([]Client, uint64) { return d.clients.top(id, n) }

// SampledTotal is how many sampled connects were read.
func (d *Dataplane) SampledTotal() uint64 {
	d.clients.mu.Lock()
	defer d.clients.mu.Unlock()
	return d.clients.total
}
