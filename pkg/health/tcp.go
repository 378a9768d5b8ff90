package health

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// TCP is healthy when a connection can be established.
type TCP struct{}

// Check connects and closes.
func (TCP) Check(ctx context.Context, target netip.AddrPort) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return fmt.Errorf("%w: tcp connect %s: %w", ErrUnhealthy, target, err)
	}
	return c.Close()
}
