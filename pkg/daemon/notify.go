package daemon

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// sdNotify sends a state (sd_notify(3) VAR=value lines) to the service manager over
// $NOTIFY_SOCKET. Without the variable (not run by systemd with Type=notify) it does
// nothing.
func sdNotify(lines ...string) error {
	if _, err := sd.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

// readiness sends READY=1 once, when the node can forward: the data plane holds the
// configuration (a controller pass succeeded), the program is attached with BGP started
// (Run got past both) and, when start-up waits for BGP (bgp.ready_wait), every peer is
// established or the wait is over. The first two happen in either order: a first pass
// that fails is retried in the background, after the attach.
type readiness struct {
	mu                      sync.Mutex
	applied, attached, sent bool
	bgpPending              bool   // attached, waiting for the BGP sessions
	status, bgpStatus       string // STATUS= line: the data plane's, then BGP's
}

// setApplied records a successful controller pass.
func (r *readiness) setApplied(log *slog.Logger) { r.set(log, func() { r.applied = true }) }

// setAttached records that the program is attached and BGP started; status is the
// STATUS= line systemctl status shows. waitBGP holds READY=1 back until setBGP.
func (r *readiness) setAttached(log *slog.Logger, status string, waitBGP bool) {
	r.set(log, func() { r.attached, r.status, r.bgpPending = true, status, waitBGP })
}

// setBGP ends the wait for BGP; status ("bgp: 2/2 peers established") is added to the
// STATUS= line.
func (r *readiness) setBGP(log *slog.Logger, status string) {
	r.set(log, func() { r.bgpPending, r.bgpStatus = false, status })
}

func (r *readiness) set(log *slog.Logger, f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
	if r.sent || !r.applied || !r.attached || r.bgpPending {
		return
	}
	r.sent = true
	status := r.status
	if r.bgpStatus != "" {
		status += "; " + r.bgpStatus
	}
	if err := sdNotify(sd.SdNotifyReady, "STATUS="+status); err != nil {
		log.Warn("tell systemd the node is ready", "error", err)
	}
}

// reload runs a configuration reload. Once READY=1 went out it runs between RELOADING=1,
// with MONOTONIC_USEC (which Type=notify-reload requires, so that systemd can order it
// against the reload it asked for), and READY=1. Before that it runs unannounced: the
// node is not ready yet, and READY=1 still waits for the first good pass and the attach.
func (r *readiness) reload(log *slog.Logger, reload func()) {
	r.mu.Lock()
	sent := r.sent
	r.mu.Unlock()
	if !sent {
		reload()
		return
	}
	lines := []string{sd.SdNotifyReloading}
	// MONOTONIC_USEC=...\n, or empty without a monotonic clock.
	if m := strings.TrimSuffix(sd.SdNotifyMonotonicUsec(), "\n"); m != "" {
		lines = append(lines, m)
	}
	notifyState(log, lines...)
	reload()
	notifyState(log, sd.SdNotifyReady)
}

// readyStatus is the STATUS= line sent with READY=1, made from what Attach returned:
// "forwarding: xdp on eth0 (native), eth1 (adopted), 3 vips"; "forwarding: socket, 3 vips".
func readyStatus(mode string, links map[string]string, vips int) string {
	var ifs []string
	for _, name := range slices.Sorted(maps.Keys(links)) {
		ifs = append(ifs, fmt.Sprintf("%s (%s)", name, links[name]))
	}
	if len(ifs) == 0 { // socket LB alone: attached to a cgroup, not to interfaces
		return fmt.Sprintf("forwarding: %s, %d vips", mode, vips)
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
