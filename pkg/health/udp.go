package health

import (
	"bytes"
	"context"
	"fmt"
	"time"
)

// UDP sends Payload and is healthy when a reply (containing Expect, if set) comes back
// before the deadline. An ICMP port unreachable fails the check at once.
type UDP struct {
	Payload, Expect []byte
}

// Check sends one datagram and waits for the reply.
func (u UDP) Check(ctx context.Context, p Probe) error {
	c, err := dial(ctx, "udp", p)
	if err != nil {
		return fmt.Errorf("%w: udp %s: %w", ErrUnhealthy, p, err)
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
