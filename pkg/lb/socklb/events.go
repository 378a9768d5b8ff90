package socklb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/cilium/ebpf/ringbuf"
)

// eventSize is sizeof(struct sock_event) in bpf/sock_lb.c.
const eventSize = 8 + 4 + 4 + 4 + 16 + 4

// maxClientsPerVIP bounds the aggregation: a VIP's further new clients are counted in
// Other instead of getting a row.
const maxClientsPerVIP = 1024

// Event is one sampled translated connect.
type Event struct {
	CgroupID  uint64
	PID       uint32
	VIPID     uint32
	BackendID uint32
	Comm      string
}

func decodeEvent(b []byte) (Event, error) {
	if len(b) < eventSize {
		return Event{}, fmt.Errorf("socket event of %d bytes, want %d", len(b), eventSize)
	}
	le := binary.LittleEndian
	comm := b[20:36]
	if i := bytes.IndexByte(comm, 0); i >= 0 {
		comm = comm[:i]
	}
	return Event{CgroupID: le.Uint64(b[0:]), PID: le.Uint32(b[8:]), VIPID: le.Uint32(b[12:]),
		BackendID: le.Uint32(b[16:]), Comm: string(comm)}, nil
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

// Run reads sampled connects from the ring buffer until ctx is done.
func (d *Dataplane) Run(ctx context.Context) error {
	r, err := ringbuf.NewReader(d.objs.SockEvents)
	if err != nil {
		return fmt.Errorf("read socket events: %w", err)
	}
	go func() {
		<-ctx.Done()
		r.Close()
	}()
	var rec ringbuf.Record
	for {
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read socket events: %w", err)
		}
		e, err := decodeEvent(rec.RawSample)
		if err != nil {
			d.log.Warn("bad socket event", "error", err)
			continue
		}
		d.clients.add(e)
	}
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
