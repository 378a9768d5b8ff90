package xdp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/monitor"
)

// MonitorSettings are what the program reports (bpf/monitor.h); they change while it runs.
type MonitorSettings struct {
	// Drops: every drop, with its reason.
	Drops bool
	// Flows: sampled forwarding decisions (new flow, conntrack miss on a non-SYN, moved).
	Flows bool
	// SampleEvery: one flow decision in this many is reported (0 or 1: all).
	SampleEvery uint32
	// Rate: events per second per CPU at most; 0: no limit.
	Rate uint32
}

// SetMonitor applies s to the running program. The flags are written last, so a
// program that sees them on also sees the rate and the sampling that go with them.
func (d *Dataplane) SetMonitor(s MonitorSettings) error {
	var flags uint32
	if s.Drops {
		flags |= monFDrops
	}
	if s.Flows {
		flags |= monFFlows
	}
	if err := d.objs.MonitorRate.Set(s.Rate); err != nil {
		return fmt.Errorf("set monitor rate: %w", err)
	}
	if err := d.objs.MonitorSample.Set(max(s.SampleEvery, 1)); err != nil {
		return fmt.Errorf("set monitor sampling: %w", err)
	}
	if err := d.objs.MonitorFlags.Set(flags); err != nil {
		return fmt.Errorf("set monitor flags: %w", err)
	}
	return nil
}

// MonitorLost sums, over CPUs, the events the program could not send: over the rate,
// and for want of room in the ring.
func (d *Dataplane) MonitorLost() (rateLimited, ringFull uint64, err error) {
	var per []xdplbMonCpu
	if err := d.objs.MonitorState.Lookup(uint32(0), &per); err != nil {
		return 0, 0, fmt.Errorf("read monitor state: %w", err)
	}
	for _, c := range per {
		rateLimited += c.LostRate
		ringFull += c.LostRing
	}
	return rateLimited, ringFull, nil
}

// RawEvent is one event as the program sent it, with ids not yet named.
type RawEvent struct {
	Time     time.Time
	CPU      uint32
	Type     monitor.Type
	Reason   string // a counter name (drops) or monitor.Reason* (flows)
	Flow     Flow
	TCPFlags uint8
	// VIPID, BackendID and PrevBackendID are valid when their Has* is set.
	VIPID, BackendID, PrevBackendID    uint32
	HasVIP, HasBackend, HasPrevBackend bool
	Len                                int
	Data                               []byte
}

const (
	monFDrops    = limits.MonFlagDrops
	monFFlows    = limits.MonFlagFlows
	monTDrop     = limits.MonTypeDrop
	monTFlow     = limits.MonTypeFlow
	monFlowNew   = limits.MonFlowNew
	monFlowMiss  = limits.MonFlowMiss
	monFlowMoved = limits.MonFlowMoved
	monEFVIP     = limits.MonEventVIP
	monEFBackend = limits.MonEventBackend
	monEFPrev    = limits.MonEventPrev
)

var flowReasons = map[uint8]string{
	monFlowNew:   monitor.ReasonNewFlow,
	monFlowMiss:  monitor.ReasonMissNonSYN,
	monFlowMoved: monitor.ReasonMoved,
}

// eventFlow is the flow of an event: only as far as the program had parsed it (a frame
// dropped before its addresses were read has none).
func eventFlow(e *xdplbMonEvent) Flow {
	k := (*prevFlowKey)(unsafe.Pointer(&e.Flow))
	if k.Family != familyV4 && k.Family != familyV6 {
		return Flow{}
	}
	f := flowOfKey(k)
	if k.Proto != uint8(lb.ProtoTCP) && k.Proto != uint8(lb.ProtoUDP) {
		f.Sport, f.Dport = 0, 0
	}
	return f
}

// framePorts fills in the ports of a TCP or UDP flow the program dropped before it read
// them (the prefilter decides on addresses alone) from the frame's first bytes, when they
// hold the transport header: IPv4 not a later fragment, or IPv6 with TCP or UDP next.
func framePorts(f *Flow, data []byte) {
	if !f.Src.IsValid() || f.Sport != 0 || f.Dport != 0 || f.Proto != lb.ProtoTCP && f.Proto != lb.ProtoUDP || len(data) < 14 {
		return
	}
	l4 := 0
	switch binary.BigEndian.Uint16(data[12:]) {
	case 0x0800:
		if len(data) < 34 || data[14]>>4 != 4 || data[23] != uint8(f.Proto) || binary.BigEndian.Uint16(data[20:])&0x1fff != 0 {
			return
		}
		l4 = 14 + int(data[14]&0xf)*4
	case 0x86dd:
		if len(data) < 54 || data[14]>>4 != 6 || data[20] != uint8(f.Proto) {
			return
		}
		l4 = 54
	default:
		return
	}
	if l4 < 34 || len(data) < l4+4 {
		return
	}
	f.Sport, f.Dport = binary.BigEndian.Uint16(data[l4:]), binary.BigEndian.Uint16(data[l4+2:])
}

// decodeEvent reads one ring buffer record.
func decodeEvent(raw []byte, offset time.Duration) (RawEvent, error) {
	var e xdplbMonEvent
	if len(raw) < int(unsafe.Sizeof(e)) {
		return RawEvent{}, fmt.Errorf("monitor event of %d bytes, want %d", len(raw), unsafe.Sizeof(e))
	}
	e = *(*xdplbMonEvent)(unsafe.Pointer(&raw[0]))
	out := RawEvent{
		Time:           time.Unix(0, int64(e.TsNs)+int64(offset)),
		CPU:            e.Cpu,
		Flow:           eventFlow(&e),
		TCPFlags:       e.TcpFlags,
		VIPID:          e.VipId,
		BackendID:      e.BackendId,
		PrevBackendID:  e.PrevBackendId,
		HasVIP:         e.Flags&monEFVIP != 0,
		HasBackend:     e.Flags&monEFBackend != 0,
		HasPrevBackend: e.Flags&monEFPrev != 0,
		Len:            int(e.Len),
		Data:           append([]byte(nil), e.Data[:min(int(e.CapLen), len(e.Data))]...),
	}
	framePorts(&out.Flow, out.Data)
	switch e.Type {
	case monTDrop:
		out.Type = monitor.Drop
		if int(e.Reason) < len(statNames) {
			out.Reason = statNames[e.Reason]
		} else {
			out.Reason = fmt.Sprintf("stat_%d", e.Reason)
		}
	case monTFlow:
		out.Type = monitor.Flow
		out.Reason = flowReasons[e.Reason]
	default:
		return RawEvent{}, fmt.Errorf("monitor event of unknown type %d", e.Type)
	}
	return out, nil
}

// ReadEvents delivers the program's events to fn until ctx ends. One reader at a time:
// the daemon fans them out (pkg/monitor).
func (d *Dataplane) ReadEvents(ctx context.Context, fn func(RawEvent)) error {
	r, err := ringbuf.NewReader(d.objs.MonitorEvents)
	if err != nil {
		return fmt.Errorf("open monitor ring buffer: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { r.Close() })
	defer stop()
	defer r.Close()
	offset := monitor.MonotonicOffset()
	var rec ringbuf.Record
	for {
		if err := r.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read monitor ring buffer: %w", err)
		}
		ev, err := decodeEvent(rec.RawSample, offset)
		if err != nil {
			d.log.Warn("monitor event skipped", "error", err)
			continue
		}
		fn(ev)
	}
}

// VIPOf is the VIP an id names now (false if none).
func (d *Dataplane) VIPOf(id uint32) (lb.VIPKey, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k, ok := d.vc.byID[id]
	if !ok {
		return lb.VIPKey{}, false
	}
	return lb.VIPKey{Addr: addrFrom16(k.Addr, k.Family), Port: htons(k.Port), Proto: lb.Proto(k.Proto)}, true
}

// BackendOf is the address of a backend id as this process wrote it, or the last one it
// had if it was deleted since (zero if unknown): events name the backend a flow left.
func (d *Dataplane) BackendOf(id uint32) netip.Addr { return d.vc.backendName(id) }
