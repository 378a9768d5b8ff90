package health

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// UDP sends Payload and is healthy when a reply (containing Expect, if set) comes back
// before the deadline. An ICMP port unreachable fails the check at once.
type UDP struct {
	Payload, Expect []byte
}

// Check sends one datagram and waits for the reply.
func (u UDP) Check(ctx context.Context, target netip.AddrPort) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", target.String())
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	defer c.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Second)
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(u.Payload); err != nil {
		return fmt.Errorf("%w: send: %w", ErrUnhealthy, err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("%w: no reply: %w", ErrUnhealthy, err)
	}
	if len(u.Expect) > 0 && !bytes.Contains(buf[:n], u.Expect) {
		return fmt.Errorf("%w: reply does not contain %q", ErrUnhealthy, u.Expect)
	}
	return nil
}
