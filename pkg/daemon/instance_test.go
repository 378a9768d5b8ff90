package daemon_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPrivilegedInstance: a second `l4lb run` on the node fails before it touches
// anything; `l4lb cleanup` refuses while the daemon runs, and works after the ring and
// conntrack sizes changed (it removes the pins without loading the program).
func TestPrivilegedInstance(t *testing.T) {
	b := newBed(t)
	b.startDaemon()
	run := func(cfg string, args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", b.lb.Name(), b.bin}, append(args, "--config", cfg)...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	linkPin := func() string {
		matches, _ := filepath.Glob(filepath.Join(b.dir, "bpffs", "l4lb", "link_*"))
		return strings.Join(matches, ",")
	}
	pinBefore := linkPin()
	if pinBefore == "" {
		t.Fatal("no pinned link after start")
	}
	var before syscall.Stat_t
	if err := syscall.Stat(pinBefore, &before); err != nil {
		t.Fatal(err)
	}

	t.Run("second run with the same config fails on the lock", func(t *testing.T) {
		out, err := run(b.cfgPath, "run")
		if err == nil || !strings.Contains(out, "locked by a running l4lb") {
			t.Fatalf("second run: %v\n%s", err, out)
		}
		var after syscall.Stat_t
		if err := syscall.Stat(pinBefore, &after); err != nil || after.Ino != before.Ino {
			t.Errorf("the pinned link changed under the running daemon (%v)", err)
		}
		if _, err := b.get(); err != nil {
			t.Errorf("traffic after the failed second run: %v", err)
		}
	})

	t.Run("second run on another bpffs fails on the admin port before loading", func(t *testing.T) {
		good, _ := os.ReadFile(b.cfgPath)
		other := filepath.Join(b.dir, "other.yaml")
		otherFS := filepath.Join(b.dir, "bpffs", "other")
		if err := os.WriteFile(other, []byte(strings.Replace(string(good), "/bpffs/l4lb", "/bpffs/other", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := run(other, "run")
		if err == nil || !strings.Contains(out, "admin listen") {
			t.Fatalf("second run: %v\n%s", err, out)
		}
		if entries, _ := os.ReadDir(otherFS); len(entries) != 0 {
			t.Errorf("the failed run pinned %d objects in %s", len(entries), otherFS)
		}
		os.Remove(otherFS)
	})

	t.Run("cleanup refuses while the daemon runs", func(t *testing.T) {
		out, err := run(b.cfgPath, "cleanup")
		if err == nil || !strings.Contains(out, "locked by a running l4lb") {
			t.Fatalf("cleanup while running: %v\n%s", err, out)
		}
		if linkPin() == "" {
			t.Error("cleanup removed the running daemon's link")
		}
	})

	t.Run("cleanup after ring_size and conntrack_size changed", func(t *testing.T) {
		b.stopDaemon(syscall.SIGTERM)
		good, _ := os.ReadFile(b.cfgPath)
		changed := strings.Replace(string(good), "xdp:\n  mtu: 1600\n", "xdp:\n  mtu: 1600\n  ring_size: 4099\n  conntrack_size: 65536\n", 1)
		if changed == string(good) {
			t.Fatal("test config has no xdp block to change")
		}
		if err := os.WriteFile(b.cfgPath, []byte(changed), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := run(b.cfgPath, "cleanup")
		if err != nil {
			t.Fatalf("cleanup: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(b.dir, "bpffs", "l4lb")); !os.IsNotExist(err) {
			entries, _ := os.ReadDir(filepath.Join(b.dir, "bpffs", "l4lb"))
			t.Errorf("bpffs directory still there (%v): %v", err, entries)
		}
		link, _ := exec.Command("ip", "-n", b.lb.Name(), "link", "show", "l0").CombinedOutput()
		if strings.Contains(string(link), "xdp") {
			t.Errorf("xdp still attached after cleanup:\n%s", link)
		}
		// The new sizes start afresh.
		b.startDaemon()
		if _, err := b.get(); err != nil {
			t.Errorf("traffic after a restart with new sizes: %v", err)
		}
	})
}
