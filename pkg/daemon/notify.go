package daemon

import (
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// sdNotify sends a state to the service manager over $NOTIFY_SOCKET (sd_notify(3)):
// one datagram of newline-separated VAR=value lines. Without the variable (not run by
// systemd with Type=notify) it does nothing. An abstract socket is written "@name"; Go's
// net package maps the "@" to the leading NUL byte.
func sdNotify(lines ...string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or an @abstract name", path)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which RELOADING=1 carries
// (MONOTONIC_USEC) so the service manager can order it against the reload request.
func monotonicUsec() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "0"
	}
	return fmt.Sprint(ts.Nano() / 1000)
}

// readiness sends READY=1 once, when the node can forward: the data plane holds the
// configuration (a controller pass succeeded) and the program is attached with BGP
// started (Run got past both). The two happen in either order: a first pass that fails
// is retried in the background, after the attach.
type readiness struct {
	mu                      sync.Mutex
	applied, attached, sent bool
	status                  string
}

// setApplied records a successful controller pass.
func (r *readiness) setApplied(log *slog.Logger) { r.set(log, func() { r.applied = true }) }

// setAttached records that the program is attached and BGP started; status is the
// STATUS= line systemctl status shows.
func (r *readiness) setAttached(log *slog.Logger, status string) {
	r.set(log, func() { r.attached, r.status = true, status })
}

func (r *readiness) set(log *slog.Logger, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
	if r.sent || !r.applied || !r.attached {
		return
	}
	r.sent = true
	if err := sdNotify("READY=1", "STATUS="+r.status); err != nil {
		log.Warn("tell systemd the node is ready", "error", err)
	}
}

// readyStatus is the STATUS= line sent with READY=1, made from what Attach returned:
// "forwarding: xdp on eth0 (native), eth1 (adopted), 3 vips".
func readyStatus(mode string, links map[string]string, vips int) string {
	var ifs []string
	for _, name := range slices.Sorted(maps.Keys(links)) {
		ifs = append(ifs, fmt.Sprintf("%s (%s)", name, links[name]))
	}
	return fmt.Sprintf("forwarding: %s on %s, %d vips", mode, strings.Join(ifs, ", "), vips)
}

// notifyState sends a state change (STOPPING=1, RELOADING=1, READY=1 after a reload),
// logging a failure: systemd's view is informative, the node runs regardless.
func notifyState(log *slog.Logger, lines ...string) {
	if err := sdNotify(lines...); err != nil {
		log.Warn("notify systemd", "state", lines[0], "error", err)
	}
}
