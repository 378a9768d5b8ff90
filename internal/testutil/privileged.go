package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// EnvPrivileged enables privileged tests when set to 1.
const EnvPrivileged = "L4LB_PRIVILEGED_TESTS"

// Privileged reports whether privileged tests were asked for.
func Privileged() bool { return os.Getenv(EnvPrivileged) == "1" }

// RequirePrivileged skips tb unless privileged tests were asked for; when they were, a
// missing requirement fails the test instead of skipping it, so CI cannot pass by
// skipping.
func RequirePrivileged(tb testing.TB) {
	tb.Helper()
	if !Privileged() {
		tb.Skipf("privileged test: set %s=1 and run as root", EnvPrivileged)
	}
	if os.Geteuid() != 0 {
		tb.Fatalf("%s=1 but not running as root (euid %d)", EnvPrivileged, os.Geteuid())
	}
}

// RequireCommands is RequirePrivileged plus the named binaries on PATH.
func RequireCommands(tb testing.TB, names ...string) {
	tb.Helper()
	RequirePrivileged(tb)
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			tb.Fatalf("%s=1 but %s is missing (make deps installs it): %v", EnvPrivileged, n, err)
		}
	}
}
