package xdp

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/internal/testutil"
)

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel ctcheck ../../../bpf/ct_check.c -- -I/usr/include/x86_64-linux-gnu

// The conntrack table's replacement policy is written twice: in C (bpf/conntrack.h, run
// here through bpf/ct_check.c) and in Go (ctPlace, used by the migration and the tests).
// Every case below runs through both, from the same buckets, and the buckets must end
// bit for bit equal (digests, backends, marks and claim generations).

const ctTableBuckets = 4

// ctDigestIn returns a digest whose first bucket is b1 and second b2 (of ctTableBuckets),
// told apart by n.
func ctDigestIn(b1, b2 uint32, n uint64) uint64 {
	lo := uint64(b1)<<30 | n
	hi := uint64(b2)<<30 | n
	return hi<<32 | lo
}

func way(d, state uint64) xdplbCtWay { return xdplbCtWay{Digest: d, State: state} }

type ctOp struct {
	digest, state uint64
}

type ctCase struct {
	name    string
	initial map[uint32][ctWays]xdplbCtWay
	ops     []ctOp
	// check, if set, states what the case is about on the final table (Go's and C's,
	// which must be equal anyway).
	check func(t *testing.T, final []xdplbCtBucket)
}

var (
	dA = ctDigestIn(0, 1, 1)
	dB = ctDigestIn(0, 1, 2)
	dC = ctDigestIn(0, 1, 3)
	dD = ctDigestIn(0, 1, 4)
	dE = ctDigestIn(0, 1, 5)
	dF = ctDigestIn(0, 1, 6)
	dS = ctDigestIn(2, 2, 7) // both buckets the same
)

func ctTableCases() []ctCase {
	full := func(ds ...uint64) [ctWays]xdplbCtWay {
		var b [ctWays]xdplbCtWay
		for i, d := range ds {
			b[i] = way(d, uint64(10+i)|ctRef|ctEst)
		}
		return b
	}
	return []ctCase{
		{name: "empty table: first bucket", ops: []ctOp{{dA, 1}},
			check: func(t *testing.T, f []xdplbCtBucket) {
				if f[0].Way[0].Digest != dA || f[0].Way[0].State&ctBackendMask != 1 {
					t.Errorf("way 0 of bucket 0 = %+v", f[0].Way[0])
				}
			}},
		{name: "same digest rewritten in place", initial: map[uint32][ctWays]xdplbCtWay{0: {way(dB, 5), way(dA, 7|ctEst)}},
			ops: []ctOp{{dA, 9}},
			check: func(t *testing.T, f []xdplbCtBucket) {
				if f[0].Way[1].State&ctBackendMask != 9 || f[0].Way[0].State&ctBackendMask != 5 {
					t.Errorf("bucket 0 = %+v", f[0])
				}
			}},
		{name: "stale entry in the second bucket is the one rewritten",
			initial: map[uint32][ctWays]xdplbCtWay{0: {way(dB, 5)}, 1: {way(dA, 7|ctEst)}},
			ops:     []ctOp{{dA, 9}},
			check: func(t *testing.T, f []xdplbCtBucket) {
				if n := ctCopies(f, dA); n != 1 {
					t.Errorf("%d entries for the flow, want 1", n)
				}
				if f[1].Way[0].State&ctBackendMask != 9 {
					t.Errorf("second bucket's entry not rewritten: %+v", f[1].Way[0])
				}
			}},
		{name: "first bucket full of referenced flows: empty way of the second",
			initial: map[uint32][ctWays]xdplbCtWay{0: full(dB, dC, dD, dE)}, ops: []ctOp{{dA, 2}}},
		{name: "one-packet flow before idle flow",
			initial: map[uint32][ctWays]xdplbCtWay{
				0: {way(dB, 3|ctRef|ctEst), way(dC, 4|ctEst), way(dD, 5), way(dE, 6|ctRef)},
				1: full(dF, ctDigestIn(3, 1, 8), ctDigestIn(3, 1, 9), ctDigestIn(3, 1, 10)),
			}, ops: []ctOp{{dA, 2}},
			check: func(t *testing.T, f []xdplbCtBucket) {
				if f[0].Way[2].Digest != dA {
					t.Errorf("the one-packet flow's way was not taken: %+v", f[0])
				}
			}},
		{name: "both buckets referenced: second chance, the digest's way goes",
			initial: map[uint32][ctWays]xdplbCtWay{0: full(dB, dC, dD, dE),
				1: full(dF, ctDigestIn(3, 1, 8), ctDigestIn(3, 1, 9), ctDigestIn(3, 1, 10))},
			ops: []ctOp{{dA, 2}}},
		{name: "busy way skipped", initial: map[uint32][ctWays]xdplbCtWay{0: {way(0, ctBusy)}},
			ops: []ctOp{{dA, 2}}},
		{name: "one bucket for both halves", ops: []ctOp{{dS, 1}, {dS, 2}}},
		{name: "claim generation advances on every rewrite of a way",
			ops: []ctOp{{dA, 1}, {dA, 2}, {dA, 1}},
			check: func(t *testing.T, f []xdplbCtBucket) {
				if g := (f[0].Way[0].State & ctGenMask) >> ctGenShift; g != 3 {
					t.Errorf("generation after three claims = %d, want 3", g)
				}
			}},
		{name: "generation wraps", initial: map[uint32][ctWays]xdplbCtWay{0: {way(dA, 1|ctGenMask)}},
			ops: []ctOp{{dA, 4}}},
	}
}

// ctCopies counts the ways of the table holding digest d.
func ctCopies(f []xdplbCtBucket, d uint64) int {
	n := 0
	for _, b := range f {
		for _, w := range b.Way {
			if w.Digest == d && w.State&ctBackendMask != 0 {
				n++
			}
		}
	}
	return n
}

func ctInitial(c ctCase) []xdplbCtBucket {
	bs := make([]xdplbCtBucket, ctTableBuckets)
	for i, ways := range c.initial {
		bs[i].Way = ways
	}
	return bs
}

// ctRunGo applies the case's inserts with ctPlace.
func ctRunGo(c ctCase) []xdplbCtBucket {
	bs := ctInitial(c)
	for _, op := range c.ops {
		b1 := &bs[ctBucketIndex(op.digest, ctTableBuckets, 0)]
		b2 := &bs[ctBucketIndex(op.digest, ctTableBuckets, 1)]
		ctPlace(b1, b2, op.digest, op.state)
	}
	return bs
}

type ctChecker struct {
	objs ctcheckObjects
}

func loadCtChecker(t *testing.T) *ctChecker {
	t.Helper()
	spec, err := loadCtcheck()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	spec.Maps["conntrack"].MaxEntries = ctTableBuckets
	if err := spec.Variables["ct_buckets"].Set(uint32(ctTableBuckets)); err != nil {
		t.Fatal(err)
	}
	c := &ctChecker{}
	if err := spec.LoadAndAssign(&c.objs, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.objs.Close() })
	return c
}

// run sends one request through the C: op 0 inserts (returns ct_insert's result), op 1
// finds (returns found and the state).
func (c *ctChecker) run(t *testing.T, op uint32, digest, state uint64) (uint32, uint64) {
	t.Helper()
	req := make([]byte, 64)
	binary.LittleEndian.PutUint32(req[0:], op)
	binary.LittleEndian.PutUint64(req[8:], digest)
	binary.LittleEndian.PutUint64(req[16:], state)
	out := make([]byte, len(req))
	ret, err := c.objs.CtCheck.Run(&ebpf.RunOptions{Data: req, DataOut: out})
	if err != nil || ret != 2 { // XDP_PASS
		t.Fatalf("ct_check: ret %d, %v", ret, err)
	}
	return binary.LittleEndian.Uint32(out[4:]), binary.LittleEndian.Uint64(out[16:])
}

func (c *ctChecker) set(t *testing.T, bs []xdplbCtBucket) {
	t.Helper()
	for i := range bs {
		if err := c.objs.Conntrack.Put(uint32(i), &bs[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *ctChecker) table(t *testing.T) []xdplbCtBucket {
	t.Helper()
	bs := make([]xdplbCtBucket, ctTableBuckets)
	for i := range bs {
		if err := c.objs.Conntrack.Lookup(uint32(i), &bs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return bs
}

func TestPrivilegedConntrackTableCMatchesGo(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := loadCtChecker(t)
	for _, tc := range ctTableCases() {
		t.Run(tc.name, func(t *testing.T) {
			c.set(t, ctInitial(tc))
			for _, op := range tc.ops {
				if r, _ := c.run(t, 0, op.digest, op.state); r == 3 {
					t.Fatal("no bucket")
				}
			}
			gotC, gotGo := c.table(t), ctRunGo(tc)
			for i := range gotC {
				if gotC[i] != gotGo[i] {
					t.Errorf("bucket %d:\n C  %s\n Go %s", i, fmtBucket(gotC[i]), fmtBucket(gotGo[i]))
				}
			}
			if tc.check != nil {
				tc.check(t, gotC)
			}
			// And what ct_find reads back agrees with ctFind on the same table.
			for _, op := range tc.ops {
				found, st := c.run(t, 1, op.digest, 0)
				var w *xdplbCtWay
				for half := range 2 {
					if w == nil {
						w = ctFind(&gotGo[ctBucketIndex(op.digest, ctTableBuckets, half)], op.digest)
					}
				}
				if (found == 1) != (w != nil) || (w != nil && w.State != st) {
					t.Errorf("find %#x: C found=%d state=%#x, Go %+v", op.digest, found, st, w)
				}
			}
		})
	}
}

func fmtBucket(b xdplbCtBucket) string {
	s := ""
	for _, w := range b.Way {
		s += fmt.Sprintf("[%#x %#x] ", w.Digest, w.State)
	}
	return s
}

// A way claimed for flow X (backend 1), then Y (backend 2), then Z (backend 1 again)
// must not read the same to a reader that compares the state before and after the
// digest: the claim generation differs.
func TestPrivilegedConntrackRewriteBackToSameBackendReadsChanged(t *testing.T) {
	testutil.RequirePrivileged(t)
	c := loadCtChecker(t)
	c.set(t, make([]xdplbCtBucket, ctTableBuckets))
	var states []uint64
	for _, op := range []ctOp{{dA, 1}, {dA, 2}, {dA, 1}} {
		c.run(t, 0, op.digest, op.state)
		states = append(states, c.table(t)[0].Way[0].State)
	}
	const claim = ctBackendMask | ctGenMask
	if (states[0]^states[2])&claim == 0 {
		t.Errorf("state after X (backend 1) %#x and after Z (backend 1) %#x read the same to a reader", states[0], states[2])
	}
}
