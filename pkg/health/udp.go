package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// UDP sends Payload and is healthy when a reply (containing Expect, if set) comes back
// before the deadline. A wrong reply, no reply and an ICMP port unreachable fail with
// ErrWrongReply, ErrNoReply and ErrPortUnreachable; the last one at once.
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
	wait := time.Until(deadline).Round(time.Millisecond)
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) }) // cancelled: stop waiting
	defer stop()
	// A connected UDP socket learns of an ICMP port unreachable as ECONNREFUSED, on the
	// read that waits for the reply or on a later send.
	if _, err := c.Write(u.Payload); err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: udp %s: %w (icmp): %w", ErrUnhealthy, p, ErrPortUnreachable, err)
		}
		return fmt.Errorf("%w: udp %s: send: %w", ErrUnhealthy, p, err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	switch {
	case err == nil:
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: udp %s: %w (icmp): %w", ErrUnhealthy, p, ErrPortUnreachable, err)
	case errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != context.Canceled:
		return fmt.Errorf("%w: udp %s: %w within %s", ErrUnhealthy, p, ErrNoReply, wait)
	default:
		return fmt.Errorf("%w: udp %s: read reply: %w", ErrUnhealthy, p, err)
	}
	if len(u.Expect) > 0 && !bytes.Contains(buf[:n], u.Expect) {
		return fmt.Errorf("%w: udp %s: %w: %d bytes %.64q do not contain %q", ErrUnhealthy, p, ErrWrongReply, n, buf[:n], u.Expect)
	}
	return nil
}
