package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/internal/testutil"
)

// maxExposure is the `systemd-analyze security` exposure docs/operations.md quotes for
// the unit (0 is locked down, 10 is unprotected); hardening must not regress past it.
const maxExposure = 2.7

// unitFor copies conf/l4lb.service with /usr/bin/l4lb replaced by bin, since
// systemd-analyze checks that the commands exist.
func unitFor(t *testing.T, bin string) string {
	t.Helper()
	b, err := os.ReadFile("../conf/l4lb.service")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "l4lb.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/bin/l4lb", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// verify runs systemd-analyze verify and returns its complaints: its exit status and
// the warnings (an unknown directive or value) it prints with exit status 0. It logs to
// the console: where stderr is not a terminal it would otherwise log to the journal.
func verify(unit string, env []string, args ...string) (string, error) {
	cmd := exec.Command("systemd-analyze", append(append([]string{"verify"}, args...), unit)...)
	cmd.Env = append(append(os.Environ(), "SYSTEMD_LOG_TARGET=console"), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// verifyUnit fails the test on any complaint of systemd-analyze verify.
func verifyUnit(t *testing.T, unit string, env []string, args ...string) {
	t.Helper()
	if out, err := verify(unit, env, args...); err != nil || out != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
}

// TestUnitVerifies checks conf/l4lb.service with systemd-analyze verify (the man pages
// it names are checked where the package is installed, TestPrivilegedPackage) and its
// security exposure.
func TestUnitVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if testutil.Privileged() {
			t.Fatal("systemd-analyze not installed (apt-get install systemd; make deps)")
		}
		t.Skip("systemd-analyze not installed (apt-get install systemd; make deps)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	unit := unitFor(t, self)
	verifyUnit(t, unit, nil, "--man=no")

	t.Run("a broken unit is reported", func(t *testing.T) {
		b, _ := os.ReadFile(unit)
		bad := filepath.Join(t.TempDir(), "l4lb.service")
		os.WriteFile(bad, []byte(strings.Replace(string(b), "\nType=notify\n", "\nType=notfy\n", 1)), 0o644)
		if out, _ := verify(bad, nil, "--man=no"); !strings.Contains(out, "notfy") {
			t.Errorf("systemd-analyze verify did not complain about Type=notfy:\n%s", out)
		}
	})

	t.Run("security exposure", func(t *testing.T) {
		out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", unit).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for l4lb.service: ([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security: %v\n%s", err, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("systemd-analyze security exposure: %.1f", score)
		if score > maxExposure {
			t.Errorf("exposure %.1f, more than the %.1f the docs quote:\n%s", score, maxExposure, out)
		}
	})
}
