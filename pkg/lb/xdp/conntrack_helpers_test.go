package xdp

import (
	"testing"
)

// ctBuckets reads f's two conntrack buckets (their indexes in idx; they may be one).
func ctBuckets(t testing.TB, d *Dataplane, digest uint64) (idx [2]uint32, b [2]xdplbCtBucket) {
	t.Helper()
	for half := range 2 {
		idx[half] = ctBucketIndex(digest, d.objs.Conntrack.MaxEntries(), half)
		if err := d.objs.Conntrack.Lookup(idx[half], &b[half]); err != nil {
			t.Fatal(err)
		}
	}
	return idx, b
}

// ctPut writes a conntrack entry for f (backend id, last packet at lastSeenNs on the
// monotonic clock) the way the program places one.
func ctPut(t testing.TB, d *Dataplane, f Flow, backend uint32, lastSeenNs uint64) {
	t.Helper()
	digest := ctDigest(f)
	idx, b := ctBuckets(t, d, digest)
	b2 := &b[1]
	if idx[1] == idx[0] {
		b2 = &b[0]
	}
	ctPlace(&b[0], b2, digest, uint64(backend)|uint64(uint32(lastSeenNs>>ctTimeShift))<<ctSeenShift)
	for half := range 2 {
		if half == 1 && idx[1] == idx[0] {
			break
		}
		if err := d.objs.Conntrack.Put(idx[half], &b[half]); err != nil {
			t.Fatal(err)
		}
	}
}

// ctDelete removes f's conntrack entry; it fails the test if there is none.
func ctDelete(t testing.TB, d *Dataplane, f Flow) {
	t.Helper()
	digest := ctDigest(f)
	idx, b := ctBuckets(t, d, digest)
	for half := range 2 {
		if w := ctFind(&b[half], digest); w != nil {
			*w = xdplbCtWay{}
			if err := d.objs.Conntrack.Put(idx[half], &b[half]); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no conntrack entry for %v", f)
}
