package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/internal/bpfobj"
	"github.com/l4lb/l4lb/internal/limits"
)

// The trace runs the program's own object, loaded a second time with trace_mode set and
// every map of the loaded program in place of its own: it decides from the live state as
// the attached program does, and writes nothing (bpf/xdp_maps.h trace_mode). The attached
// program has trace_mode 0, so its verifier removed every trace branch: a trace costs
// the fast path nothing.

// xdpMd is struct xdp_md, the context BPF_PROG_TEST_RUN takes: Data is the length of the
// metadata in front of the frame.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Trace is what the program decided for one frame, and why.
type Trace struct {
	Action uint32 // XDP_*
	Reason string // the counter a real packet would count in
	// VIPID is valid with HasVIP.
	VIPID        uint32
	HasVIP       bool
	AllowChecked bool // the VIP's allow list was checked and let the source in
	SYN          bool // a SYN: conntrack was not looked up
	// CtFound: an entry for the flow; CtState its state word; CtFollowed: the packet
	// went to its backend. MovedReason says why an entry found was not followed.
	CtFound     bool
	CtState     uint64
	CtFollowed  bool
	MovedReason string
	// Ring: the ring was consulted; Slot the slot the hash picked (Hash).
	Ring  bool
	Slot  uint32
	Hash  uint32
	Guard string // "", "untracked" or "drop": the VIP's new-flow guard's answer
	// BackendID is the backend the packet went to (0: none).
	BackendID uint32
	// WriteNew / WriteUpdate: a real packet would write a new entry / rewrite the found one.
	WriteNew, WriteUpdate bool
	// Out is the frame as the program left it (encapsulated, or the ICMP answer).
	Out []byte
}

type tracer struct {
	mu           sync.Mutex
	prog         *ebpf.Program
	coll         *ebpf.Collection
	membersReady uint32
}

func (t *tracer) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.coll != nil {
		t.coll.Close()
		t.coll, t.prog = nil, nil
	}
}

// liveMaps are the loaded program's maps by name.
func (d *Dataplane) liveMaps() map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	v := reflect.ValueOf(&d.objs.xdplbMaps).Elem()
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("ebpf")
		if m, ok := v.Field(i).Interface().(*ebpf.Map); ok && m != nil && name != "" {
			out[name] = m
		}
	}
	return out
}

// traceProgram returns the trace instance, loading it when there is none yet or the
// live program's run-time state it copies (members_ready) changed. t.mu is held.
func (d *Dataplane) traceProgram(t *tracer) (*ebpf.Program, error) {
	var ready uint32
	if err := d.objs.MembersReady.Get(&ready); err != nil {
		return nil, fmt.Errorf("read members_ready: %w", err)
	}
	if t.prog != nil && t.membersReady == ready {
		return t.prog, nil
	}
	if t.coll != nil {
		t.coll.Close()
		t.coll, t.prog = nil, nil
	}
	spec, err := loadXdplb()
	if err != nil {
		return nil, fmt.Errorf("load xdp_lb spec: %w", err)
	}
	live := d.liveMaps()
	for name, ms := range spec.Maps {
		ms.Pinning = ebpf.PinNone
		if m, ok := live[name]; ok {
			ms.MaxEntries = m.MaxEntries()
		}
	}
	if err := setLoadVariables(spec, d.opts, d.objs.VipBackends.MaxEntries()); err != nil {
		return nil, err
	}
	for name, v := range map[string]uint32{"members_ready": ready, "trace_mode": 1} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: live})
	if err != nil {
		return nil, bpfobj.DescribeLoad("xdp_lb (trace)", err)
	}
	t.coll, t.prog, t.membersReady = coll, coll.Programs["xdp_lb"], ready
	return t.prog, nil
}

var movedReasons = map[uint8]string{
	limits.TraceMovedGone:    "backend removed",
	limits.TraceMovedNotMemb: "backend no longer a member of the VIP",
	limits.TraceMovedExpired: "udp entry idle past the timeout",
}

// Trace runs frame (from the Ethernet header on) through the trace instance. Nothing it
// does changes a map: conntrack, counters and rate windows stay as they were.
func (d *Dataplane) Trace(frame []byte) (Trace, error) {
	if d.isClosed() {
		return Trace{}, errors.New("trace: data plane closed")
	}
	d.tracer.mu.Lock()
	defer d.tracer.mu.Unlock()
	prog, err := d.traceProgram(&d.tracer)
	if err != nil {
		return Trace{}, err
	}
	meta := limits.TraceRecordBytes
	in := append(make([]byte, meta), frame...)
	out := make([]byte, len(in)+256)
	var ctxOut xdpMd
	opts := ebpf.RunOptions{
		Data: in, DataOut: out, Repeat: 1,
		Context:    xdpMd{Data: uint32(meta), DataEnd: uint32(len(in))},
		ContextOut: &ctxOut,
	}
	action, err := prog.Run(&opts)
	if err != nil {
		return Trace{}, fmt.Errorf("trace run: %w", err)
	}
	got := opts.DataOut
	if int(ctxOut.Data) != meta || len(got) < meta {
		return Trace{}, fmt.Errorf("trace run: the program left %d bytes of metadata, want %d", ctxOut.Data, meta)
	}
	var rec xdplbTraceRecord
	if unsafe.Sizeof(rec) != uintptr(meta) {
		return Trace{}, fmt.Errorf("trace record is %d bytes, want %d", unsafe.Sizeof(rec), meta)
	}
	if _, err := binary.Decode(got[:meta], binary.NativeEndian, &rec); err != nil {
		return Trace{}, fmt.Errorf("decode trace record: %w", err)
	}
	if rec.Magic != limits.TraceMagic {
		return Trace{}, errors.New("trace run: the program wrote no trace record")
	}
	tr := Trace{
		Action:       action,
		VIPID:        rec.VipId,
		HasVIP:       rec.Flags&limits.TraceVIP != 0,
		AllowChecked: rec.Flags&limits.TraceAllow != 0,
		SYN:          rec.Flags&limits.TraceSYN != 0,
		CtFound:      rec.Flags&limits.TraceCtFound != 0,
		CtState:      rec.CtState,
		CtFollowed:   rec.Flags&limits.TraceCtFollowed != 0,
		MovedReason:  movedReasons[rec.Detail>>2&3],
		Ring:         rec.Flags&limits.TraceRing != 0,
		Slot:         rec.Slot,
		Hash:         rec.Hash,
		BackendID:    rec.BackendId,
		WriteNew:     rec.Flags&limits.TraceWriteNew != 0,
		WriteUpdate:  rec.Flags&limits.TraceWriteUpdate != 0,
		Out:          append([]byte(nil), got[meta:]...),
	}
	switch rec.Detail & 3 {
	case 1:
		tr.Guard = "untracked"
	case 2:
		tr.Guard = "drop"
	}
	if int(rec.Reason) < len(statNames) {
		tr.Reason = statNames[rec.Reason]
	}
	return tr, nil
}
