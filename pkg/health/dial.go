package health

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// dial connects to p.Addr over network ("tcp" or "udp"). Every checker dials through it,
// so a probe's mark is on all of its packets, whatever the protocol.
func dial(ctx context.Context, network string, p Probe) (net.Conn, error) {
	var d net.Dialer
	if p.Mark != 0 {
		d.Control = markControl(p.Mark)
	}
	return d.DialContext(ctx, network, p.Addr.String())
}

// markControl sets SO_MARK on a socket before it connects.
func markControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// The kernel reads a 32-bit int: int32(mark) keeps the bits of marks >= 1<<31.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(int32(mark)))
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set mark %#x (needs CAP_NET_ADMIN): %w", mark, os.NewSyscallError("setsockopt SO_MARK", serr))
		}
		return nil
	}
}
