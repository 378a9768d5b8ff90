package testbed_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
	"github.com/l4lb/l4lb/testbed"
)

// releases are the earlier releases an upgrade starts from, each with what the new
// daemon's log must say it did with that release's pinned maps: the last release, the
// last one with a pinned map this one no longer has, and the last one whose conntrack
// had another layout (an LRU hash).
var releases = []struct{ commit, migration string }{
	{"4401d12", "adopted pinned xdp link"},
	{"e2172fd", "removed a pinned map this release no longer uses"}, // backend_stats, now per (VIP, backend)
	{"ce3a5fa", "migrated pinned conntrack"},
}

// previousL4LB builds the previous release's l4lb from git history (cached under the
// user's cache directory) and returns its path. Without that history (a shallow clone)
// the test is skipped, saying so.
func previousL4LB(t *testing.T, previousRelease string) string {
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

// An upgrade by plain restarts: the testbed runs an earlier release, clients hold
// kept-alive connections, then lb1 and then lb2 are stopped and started with this build.
// The new daemon adopts or migrates the earlier release's pinned maps (from ce3a5fa its
// conntrack, an LRU hash, into the bucket table); every connection keeps its backend
// throughout, and the last node upgraded holds every connection's entry afterwards.
func TestPrivilegedUpgradeKeepsFlows(t *testing.T) {
	for _, r := range releases {
		t.Run(r.commit, func(t *testing.T) { upgradeKeepsFlows(t, r.commit, r.migration) })
	}
}

func upgradeKeepsFlows(t *testing.T, release, migration string) {
	prev := previousL4LB(t, release)
	// The testbed's configs without what the earlier releases do not know (tunnel health
	// checks, `via: tunnel`): both binaries run the same file.
	conf := t.TempDir()
	for _, lb := range testbed.LBNodes {
		raw, err := os.ReadFile(filepath.Join("..", "conf", "testbed", lb+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(conf, lb+".yaml"), []byte(strings.ReplaceAll(string(raw), ", via: tunnel", "")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := newBedWithBinary(t, prev, func(lb string) (string, []string) { return filepath.Join(conf, lb+".yaml"), nil })

	const n = 40
	conns := openKeptAlive(t, b, n)
	check := func(when string) {
		t.Helper()
		kept := 0
		for i, c := range conns {
			be, err := c.Get()
			switch {
			case err != nil:
				t.Errorf("%s: connection %d (to %s) broke: %v", when, i, c.Backend, err)
			case be != c.Backend:
				t.Errorf("%s: connection %d answered by %s, was %s", when, i, be, c.Backend)
			default:
				kept++
			}
		}
		t.Logf("%s: %d of %d connections kept their backend", when, kept, n)
	}
	check("on the previous release")

	// While lb1 was stopped every connection went through lb2, still on the previous
	// release, which wrote a conntrack entry for each. lb2's new daemon migrates them:
	// before any packet reaches it, every connection must be in its table, and
	// connections of one backend must name one backend id.
	migrated := func() {
		ct, err := ebpf.LoadPinnedMap(filepath.Join(bpffsOf(t, "lb2"), "l4lb", "conntrack"), nil)
		if err != nil {
			t.Fatalf("lb2: open the pinned conntrack: %v", err)
		}
		defer ct.Close()
		ids := map[string]uint32{}
		for i, c := range conns {
			la := c.C.LocalAddr().(*net.TCPAddr).AddrPort()
			f := xdp.Flow{Src: la.Addr().Unmap(), Dst: netip.MustParseAddr(testbed.VIP4), Sport: la.Port(), Dport: 80, Proto: lb.ProtoTCP}
			id, ok, err := xdp.ConntrackLookupIn(ct, f)
			switch {
			case err != nil:
				t.Fatal(err)
			case !ok:
				t.Errorf("lb2 restarted: connection %d (%v, to %s) has no conntrack entry", i, la, c.Backend)
			default:
				if prev, seen := ids[c.Backend]; seen && prev != id {
					t.Errorf("lb2 restarted: connection %d to %s has backend id %d, another to it %d", i, c.Backend, id, prev)
				}
				ids[c.Backend] = id
			}
		}
		if len(ids) > 1 {
			distinct := map[uint32]bool{}
			for _, id := range ids {
				distinct[id] = true
			}
			if len(distinct) != len(ids) {
				t.Errorf("lb2 restarted: backend ids %v: two backends share one", ids)
			}
		}
		t.Logf("lb2 restarted: all connections found in the migrated conntrack, backend ids %v", ids)
	}

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
		if !strings.Contains(string(log), migration) {
			t.Errorf("%s: the new daemon's log does not say %q", lb, migration)
		}
		if lb == "lb2" {
			migrated()
		}
		check(lb + " upgraded")
	}
	ctx := context.Background()
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := b.Output(vctx, "lb1", b.L4LB(), "version"); err == nil {
		t.Logf("now running: %s", strings.TrimSpace(out))
	}
}
