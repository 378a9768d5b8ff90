package daemon_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
)

// TestPrivilegedSdNotify runs the real daemon as systemd runs a Type=notify service: with
// NOTIFY_SOCKET naming a unixgram socket the test listens on. When READY=1 arrives the
// node must already forward: XDP attached, the VIP's maps programmed (the readiness probe
// says a pass succeeded) and a connection to the VIP served. SIGHUP brings RELOADING=1
// then READY=1; SIGTERM brings STOPPING=1. (That READY=1 waits for both the first good
// pass and the attach, in either order, is TestReadinessWaitsForBoth.)
func TestPrivilegedSdNotify(t *testing.T) {
	testutil.RequirePrivileged(t)
	b := newBed(t)
	sock := filepath.Join(b.dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	next := func(wait time.Duration) string {
		t.Helper()
		buf := make([]byte, 4096)
		ln.SetReadDeadline(time.Now().Add(wait))
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no notification within %s: %v", wait, err)
		}
		return string(buf[:n])
	}

	cmd := exec.Command("ip", "netns", "exec", b.lb.Name(), b.bin, "run", "--config", b.cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	cmd.Stdout, cmd.Stderr = b.logs, b.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.daemon = cmd
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	got := next(15 * time.Second)
	// The status names each interface's attach result: READY=1 was composed after Attach.
	if !regexp.MustCompile(`^READY=1\nSTATUS=forwarding: xdp on l0 \((native|generic)\), 2 vips$`).MatchString(got) {
		t.Fatalf("first notification %q, want READY=1 with the status", got)
	}
	if link := b.lb.Run(t, "ip", "link", "show", "l0"); !strings.Contains(link, "xdp") {
		t.Errorf("READY=1 before XDP is attached:\n%s", link)
	}
	if code, body := b.admin("GET", "/readyz", ""); code != 200 {
		t.Errorf("READY=1 but /readyz is %d: %s", code, body)
	}
	if name, err := b.get(); err != nil {
		t.Errorf("READY=1 but the VIP does not answer: %v", err)
	} else {
		t.Logf("first request after READY=1 served by %s", name)
	}

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if got := next(5 * time.Second); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("after SIGHUP: %q, want RELOADING=1 with MONOTONIC_USEC", got)
	}
	if got := next(5 * time.Second); got != "READY=1" {
		t.Errorf("after the reload: %q, want READY=1", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := next(5 * time.Second); got != "STOPPING=1" {
		t.Errorf("after SIGTERM: %q, want STOPPING=1", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("daemon exit: %v", err)
	}
}
