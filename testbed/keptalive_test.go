package testbed_test

import (
	"bufio"
	"net"
	"testing"

	"github.com/l4lb/l4lb/testbed"
)

// keptAlive is an HTTP connection through the IPv4 web VIP, held open, with the backend
// that answered its first request.
type keptAlive struct {
	c       net.Conn
	r       *bufio.Reader
	backend string
}

// openKeptAlive opens n kept-alive connections from the client to the IPv4 web VIP and
// makes a first request on each; they close when the test ends.
func openKeptAlive(t testing.TB, b *testbed.Bed, n int) []keptAlive {
	t.Helper()
	var conns []keptAlive
	for i := 0; i < n; i++ {
		c, err := dial(b, "client", net.JoinHostPort(testbed.VIP4, "80"))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		r := bufio.NewReader(c)
		be, err := get(c, r, testbed.VIP4)
		if err != nil {
			t.Fatalf("connection %d, first request: %v", i, err)
		}
		conns = append(conns, keptAlive{c, r, be})
	}
	return conns
}
