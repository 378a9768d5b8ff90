package daemon

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrRunning: another l4lb holds the node's instance lock.
var ErrRunning = errors.New("another l4lb is running on this node")

// lockInstance takes the node's instance lock: an exclusive flock on the bpffs directory
// (created if missing), the resource two daemons must never share. The kernel drops the
// lock when the process exits, however it exits.
func lockInstance(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create bpffs directory: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open %s for the instance lock: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by a running l4lb (stop it first)", ErrRunning, dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
