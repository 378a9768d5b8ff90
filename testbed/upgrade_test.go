package testbed_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/testbed"
)

// previousRelease is the commit of the release an upgrade starts from.
const previousRelease = "6309cf8"

// previousL4LB builds the previous release's l4lb from git history (cached under the
// user's cache directory) and returns its path. Without that history (a shallow clone)
// the test is skipped, saying so.
func previousL4LB(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "l4lb-test", "l4lb-"+previousRelease)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", previousRelease+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("previous release %s not in the git history (shallow clone or no git: %v %s); fetch it to run the upgrade test", previousRelease, err, strings.TrimSpace(string(out)))
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, previousRelease, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract %s: %v\n%s", previousRelease, err, out)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", bin+".tmp", "./cmd/l4lb")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build l4lb %s: %v\n%s", previousRelease, err, out)
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// newBinary builds this l4lb.
func newBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "l4lb")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/l4lb/l4lb/cmd/l4lb").CombinedOutput(); err != nil {
		t.Fatalf("build l4lb: %v\n%s", err, out)
	}
	return bin
}

// An upgrade by plain restarts: the testbed runs the previous release, clients hold
// kept-alive connections, then lb1 and then lb2 are stopped and started with this build.
// The new daemon migrates the previous release's pinned maps; every connection keeps its
// backend throughout.
func TestPrivilegedUpgradeKeepsFlows(t *testing.T) {
	prev := previousL4LB(t)
	conf, err := filepath.Abs("../conf/testbed")
	if err != nil {
		t.Fatal(err)
	}
	b := newBedWithBinary(t, prev, func(lb string) (string, []string) { return filepath.Join(conf, lb+".yaml"), nil })

	const n = 40
	conns := openKeptAlive(t, b, n)
	check := func(when string) {
		t.Helper()
		kept := 0
		for i, c := range conns {
			be, err := get(c.c, c.r, testbed.VIP4)
			switch {
			case err != nil:
				t.Errorf("%s: connection %d (to %s) broke: %v", when, i, c.backend, err)
			case be != c.backend:
				t.Errorf("%s: connection %d answered by %s, was %s", when, i, be, c.backend)
			default:
				kept++
			}
		}
		t.Logf("%s: %d of %d connections kept their backend", when, kept, n)
	}
	check("on the previous release")

	b.SetL4LB(newBinary(t))
	for _, lb := range testbed.LBNodes {
		if err := b.Signal(lb, "l4lb", syscall.SIGTERM, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		check(lb + " stopped")
		if err := b.StartLB(lb); err != nil {
			t.Fatal(err)
		}
		waitHops(t, b, 2, 60*time.Second)
		waitAllHealthy(t, b, 30*time.Second)
		log, _ := os.ReadFile(b.LogPath(lb, "l4lb"))
		if !strings.Contains(string(log), "migrated pinned rings to the flat layout") {
			t.Errorf("%s: the new daemon's log does not say it migrated the rings", lb)
		}
		check(lb + " upgraded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := b.Output(ctx, "lb1", b.L4LB(), "version"); err == nil {
		t.Logf("now running: %s", strings.TrimSpace(out))
	}
}
