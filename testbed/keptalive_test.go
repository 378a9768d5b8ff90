package testbed_test

import (
	"testing"

	"github.com/l4lb/l4lb/testbed"
)

// openKeptAlive opens n kept-alive connections from the client to the IPv4 web VIP and
// makes a first request on each; they close when the test ends.
func openKeptAlive(t testing.TB, b *testbed.Bed, n int) []testbed.KeptAlive {
	t.Helper()
	conns, err := b.OpenKeptAlive(n)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		t.Cleanup(func() { c.C.Close() })
	}
	return conns
}
