package health

import (
	"context"
	"fmt"
)

// TCP is healthy when a connection can be established.
type TCP struct{}

// Check connects and closes.
func (TCP) Check(ctx context.Context, p Probe) error {
	c, err := dial(ctx, "tcp", p)
	if err != nil {
		return fmt.Errorf("%w: tcp connect %s: %w", ErrUnhealthy, p, err)
	}
	return c.Close()
}
