package xdp

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/monitor"
)

// stateDump is everything the program can write, as text: conntrack, the counters, the
// prefilter's drop counts, guards and rate windows.
func stateDump(tb testing.TB, d *Dataplane) string {
	tb.Helper()
	var b strings.Builder
	h := sha256.New()
	if err := ctWalk(d.objs.Conntrack, func(bk *xdplbCtBucket) {
		h.Write(unsafe.Slice((*byte)(unsafe.Pointer(bk)), unsafe.Sizeof(*bk)))
	}); err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(&b, "conntrack %x\n", h.Sum(nil))
	for _, m := range []*ebpf.Map{d.objs.Stats, d.objs.VipStats, d.objs.PairStats, d.objs.VipGuards,
		d.objs.TooBigRateState, d.objs.Deny4, d.objs.Deny6, d.objs.Deny4Counts} {
		dumpMap(tb, &b, m)
	}
	return b.String()
}

// dumpMap writes m's keys and values, in batches where the map has them (arrays).
func dumpMap(tb testing.TB, b *strings.Builder, m *ebpf.Map) {
	tb.Helper()
	perCPU := m.Type() == ebpf.PerCPUArray || m.Type() == ebpf.PerCPUHash || m.Type() == ebpf.LRUCPUHash
	if m.Type() == ebpf.Array || m.Type() == ebpf.PerCPUArray {
		vsize := int(m.ValueSize())
		if perCPU {
			n, err := ebpf.PossibleCPU()
			if err != nil {
				tb.Fatal(err)
			}
			vsize = (vsize + 7) / 8 * 8 * n
		}
		const chunk = 4096
		keys := make([]uint32, chunk)
		vals := make([]byte, chunk*vsize)
		var cursor ebpf.MapBatchCursor
		for {
			n, err := m.BatchLookup(&cursor, keys, vals, nil)
			sum := sha256.Sum256(vals[:n*vsize])
			fmt.Fprintf(b, "%s %d-%d %x\n", m, keys[0], n, sum)
			if errors.Is(err, ebpf.ErrKeyNotExist) || (err == nil && n == 0) {
				return
			}
			if err != nil {
				tb.Fatalf("dump %s: %v", m, err)
			}
		}
	}
	it := m.Iterate()
	var k, v []byte
	if perCPU {
		var pv [][]byte
		for it.Next(&k, &pv) {
			fmt.Fprintf(b, "%s %x=%x\n", m, k, pv)
		}
	} else {
		for it.Next(&k, &v) {
			fmt.Fprintf(b, "%s %x=%x\n", m, k, v)
		}
	}
	if err := it.Err(); err != nil {
		tb.Fatalf("dump %s: %v", m, err)
	}
}

// traceAgrees traces in, checks the trace wrote nothing, and returns it for comparison
// with the real run that follows.
func traceAgrees(t *testing.T, d *Dataplane, in []byte) Trace {
	t.Helper()
	before := stateDump(t, d)
	tr, err := d.Trace(in)
	if err != nil {
		t.Fatalf("trace: %v", err)
	}
	if after := stateDump(t, d); after != before {
		t.Errorf("the trace changed the maps")
	}
	return tr
}

// checkTrace compares a trace with the real verdict, output and counters of the same
// frame.
func checkTrace(t *testing.T, tr Trace, verdict uint32, out []byte, delta map[string]uint64) {
	t.Helper()
	if tr.Action != verdict {
		t.Errorf("trace action %d, the program's %d", tr.Action, verdict)
	}
	if delta[tr.Reason] == 0 {
		t.Errorf("trace reason %q, the program counted %v", tr.Reason, delta)
	}
	if verdict != xdpDrop && !bytes.Equal(tr.Out, out) {
		t.Errorf("trace output differs from the program's:\n%s", frameDiff(out, tr.Out))
	}
}

// eventReader reads the rig's monitor events.
type eventReader struct {
	r *ringbuf.Reader
	d *Dataplane
}

func newEventReader(t *testing.T, d *Dataplane) *eventReader {
	t.Helper()
	r, err := ringbuf.NewReader(d.objs.MonitorEvents)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &eventReader{r: r, d: d}
}

// pending returns every event in the ring now.
func (e *eventReader) pending(t *testing.T) []RawEvent {
	t.Helper()
	var out []RawEvent
	off := monitor.MonotonicOffset()
	for {
		e.r.SetDeadline(time.Now().Add(20 * time.Millisecond))
		rec, err := e.r.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		ev, err := decodeEvent(rec.RawSample, off)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
}

// checkEvents: a dropped frame gives exactly one drop event, with the reason it was
// counted under, its flow, length and first bytes; any other frame none.
func checkEvents(t *testing.T, evs []RawEvent, verdict uint32, in []byte, delta map[string]uint64) {
	t.Helper()
	var drops []RawEvent
	for _, e := range evs {
		if e.Type == monitor.Drop {
			drops = append(drops, e)
		}
	}
	if verdict != xdpDrop {
		if len(drops) != 0 {
			t.Errorf("%d drop events for a frame not dropped: %+v", len(drops), drops)
		}
		return
	}
	if len(drops) != 1 {
		t.Fatalf("%d drop events, want 1: %+v", len(drops), drops)
	}
	e := drops[0]
	if delta[e.Reason] == 0 || !strings.HasPrefix(e.Reason, "drop_") && e.Reason != "guard_drop" {
		t.Errorf("drop event reason %q, the program counted %v", e.Reason, delta)
	}
	if e.Len != len(in) || !bytes.Equal(e.Data, in[:min(len(in), 128)]) {
		t.Errorf("drop event carries %d of %d bytes %x, want %x", len(e.Data), e.Len, e.Data, in[:min(len(in), 128)])
	}
	// The addresses of a TCP or UDP frame that parsed that far (an ICMP's flow is the
	// quoted one, reversed).
	p := gopacket.NewPacket(in, layers.LayerTypeEthernet, gopacket.Default)
	if nl := p.NetworkLayer(); nl != nil && p.TransportLayer() != nil && e.Flow.Src.IsValid() {
		src, _ := netip.AddrFromSlice(nl.NetworkFlow().Src().Raw())
		dst, _ := netip.AddrFromSlice(nl.NetworkFlow().Dst().Raw())
		if e.Flow.Src != src.Unmap() || e.Flow.Dst != dst.Unmap() {
			t.Errorf("drop event flow %v -> %v, the frame's %v -> %v", e.Flow.Src, e.Flow.Dst, src, dst)
		}
		// Ports too, read by the program or, for a drop before it read them, from the frame.
		tf := p.TransportLayer().TransportFlow()
		if (e.Flow.Proto == lb.ProtoTCP || e.Flow.Proto == lb.ProtoUDP) && !strings.HasPrefix(e.Reason, "drop_icmp") &&
			len(tf.Src().Raw()) == 2 { // gopacket decoded the ports
			sp := binary.BigEndian.Uint16(tf.Src().Raw())
			dp := binary.BigEndian.Uint16(tf.Dst().Raw())
			if e.Flow.Sport != sp || e.Flow.Dport != dp {
				t.Errorf("drop event ports %d -> %d, the frame's %d -> %d", e.Flow.Sport, e.Flow.Dport, sp, dp)
			}
		}
	}
	if e.Time.IsZero() || time.Since(e.Time).Abs() > time.Minute {
		t.Errorf("drop event time %v", e.Time)
	}
}

func TestPrivilegedMonitorRateLimit(t *testing.T) {
	r := newRig(t, Options{})
	v := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11")}
	r.setVIP(v)
	if err := r.d.SetMonitor(MonitorSettings{Drops: true, Rate: 5}); err != nil {
		t.Fatal(err)
	}
	// test runs go on the CPU of the calling thread: keep it on one, whose one-second
	// window the limit counts in.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var one unix.CPUSet
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	ev := newEventReader(t, r.d)
	// A TCP header cut short, to a VIP address: dropped (drop_trunc_l4).
	frame := raw(pkt{src: cli4, dst: "203.0.113.10", sport: 40000, dport: 80, proto: tcp, flags: "S"}, func(b []byte) []byte { return b[:len(b)-10] })(t)
	for range 20 {
		if got, _ := r.run(frame); got != xdpDrop {
			t.Fatalf("verdict %d, want drop", got)
		}
	}
	evs := ev.pending(t)
	rate, ring, err := r.d.MonitorLost()
	if err != nil {
		t.Fatal(err)
	}
	// One CPU ran them all within a second: 5 sent, 15 over the rate.
	if len(evs) != 5 || rate != 15 || ring != 0 {
		t.Errorf("%d events, %d lost to the rate, %d to the ring; want 5, 15, 0", len(evs), rate, ring)
	}
	// Off: nothing more.
	if err := r.d.SetMonitor(MonitorSettings{}); err != nil {
		t.Fatal(err)
	}
	r.run(frame)
	if evs := ev.pending(t); len(evs) != 0 {
		t.Errorf("%d events with the monitor off", len(evs))
	}
}
