package socklb

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// bpffsDir mounts a private bpffs on a temporary directory and unmounts it afterwards.
func bpffsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount bpffs %s: %v", dir, err)
		}
	})
	return filepath.Join(dir, "l4lb")
}

func wantPlain(t *testing.T, e *env, when string) {
	t.Helper()
	rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 1}, true)
	if len(rs) != 1 || !strings.Contains(rs[0].Err, "network is unreachable") {
		t.Fatalf("%s: %+v, want the plain kernel's network unreachable", when, rs)
	}
}

func wantBalanced(t *testing.T, e *env, when string) {
	t.Helper()
	rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 20}, true)
	for _, r := range rs {
		if r.Err != "" || !strings.HasPrefix(r.Reply, "be-198.51.100.") || r.Peer != "203.0.113.10:80" {
			t.Fatalf("%s: %+v", when, r)
		}
	}
}

// Pinned: a stopped daemon's links keep balancing, a restart adopts them, and
// RemovePinned (l4lb cleanup) restores plain behaviour and leaves nothing behind.
func TestPrivilegedPinnedRestartAndCleanup(t *testing.T) {
	dir := bpffsDir(t)
	e := newEnv(t, dir)
	e.setVIP("203.0.113.10", 80, lb.ProtoTCP, weights(1, v4...))
	wantBalanced(t, e, "first run")

	if err := e.sock.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.xdp.Close(); err != nil {
		t.Fatal(err)
	}
	wantBalanced(t, e, "no daemon running")

	x2, err := xdp.Load(xdp.Options{RingSize: 1021, PinPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer x2.Close()
	s2, err := Load(Options{Shared: x2.Shared(), PinPath: dir, SampleEvery: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.Attach(e.cgroup); err != nil {
		t.Fatal(err)
	}
	e.xdp, e.sock = x2, s2
	// Only the drained set must be reached now: the adopted links run the new programs
	// over the adopted maps.
	e.setVIP("203.0.113.10", 80, lb.ProtoTCP, map[netip.Addr]uint32{v4[0]: 1})
	rs := e.client(clientSpec{Proto: "tcp", Family: 4, Addr: "203.0.113.10", Port: 80, Count: 10}, true)
	if got := names(t, rs, "203.0.113.10:80"); got[backendName(v4[0])] != 10 {
		t.Fatalf("after restart: %v", got)
	}
	s2.Close()
	x2.Close()

	removed, err := RemovePinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{linkPrefix + "connect4", linkPrefix + "getpeername6", "sock_rev", "sock_vip_stats"} {
		if !slices.Contains(removed, want) {
			t.Errorf("RemovePinned removed %v, not %s", removed, want)
		}
	}
	wantPlain(t, e, "after RemovePinned")
	if _, err := xdp.RemovePinned(dir); err != nil {
		t.Fatalf("xdp cleanup after socket cleanup: %v", err)
	}
}

// Unpinned: closing detaches.
func TestPrivilegedUnpinnedCloseDetaches(t *testing.T) {
	e := newEnv(t, "")
	e.setVIP("203.0.113.10", 80, lb.ProtoTCP, weights(1, v4...))
	wantBalanced(t, e, "attached")
	if err := e.sock.Close(); err != nil {
		t.Fatal(err)
	}
	wantPlain(t, e, "after close")
}
