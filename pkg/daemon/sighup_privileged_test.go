package daemon_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/testutil"
)

// TestPrivilegedSighupNeverStops: a SIGHUP (systemctl reload) never ends the daemon. Go's
// default action for SIGHUP is to exit, so one that arrives before the handler is in, or
// after it is gone, kills the node and drops its BGP sessions. Here the real binary gets
// one while it is provably inside start-up (blocked reading its state file, a FIFO the
// test holds) and one during the drain delay after SIGTERM. It must survive both, apply
// the first as one reload once it is ready, ignore the second, and exit 0 after the full
// drain, on SIGTERM only.
func TestPrivilegedSighupNeverStops(t *testing.T) {
	testutil.RequireCommands(t, "ip", "ethtool")
	bin := buildBinary(t)
	dir := t.TempDir()
	ns := testutil.NewNetNS(t, "hup")
	peer := testutil.NewNetNS(t, "hup-peer")
	testutil.Veth(t, ns, "l0", peer, "p0")
	ns.Run(t, "ip", "addr", "add", "192.0.2.2/26", "dev", "l0")

	const drain = 2 * time.Second
	fs := filepath.Join(dir, "bpffs")
	if err := os.MkdirAll(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", fs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	cfgPath := filepath.Join(dir, "l4lb.yaml")
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "exec", ns.Name(), bin, "cleanup", "--config", cfgPath).CombinedOutput(); err != nil {
			t.Logf("l4lb cleanup: %v: %s", err, out)
		}
		if err := unix.Unmount(fs, 0); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	state := filepath.Join(dir, "state.json")
	if err := unix.Mkfifo(state, 0o600); err != nil {
		t.Fatal(err)
	}
	// BGP on, with a peer that never answers: the drain delay applies only with BGP.
	// Readiness does not wait for that peer (ready_wait: 0s), so the start-up's SIGHUP is
	// a reload after READY=1.
	cfg := fmt.Sprintf(`interfaces: [l0]
bpffs: %s/l4lb
state_file: %s
drain_delay: %s
nexthop:
  mac: 02:00:00:00:00:01
encap:
  source4: 192.0.2.192/26
admin:
  listen: 127.0.0.1:9100
bgp:
  enabled: true
  local_asn: 65001
  router_id: 192.0.2.2
  listen_port: -1
  ready_wait: 0s
  peers:
    - address: 192.0.2.1
      asn: 65000
vips:
  - name: web
    address: 203.0.113.10
    port: 80
    protocol: tcp
    backends:
      - address: 203.0.113.18
`, fs, state, drain)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	notes := make(chan string, 16)
	go func() {
		defer close(notes)
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				return
			}
			notes <- string(buf[:n])
		}
	}()
	logs, err := os.Create(filepath.Join(dir, "l4lb.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(logs.Name())
			t.Logf("l4lb log:\n%s", out)
		}
	})

	cmd := exec.Command("ip", "netns", "exec", ns.Name(), bin, "run", "--config", cfgPath)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	// next is the next notification within wait; it fails the test if the daemon exits
	// first.
	next := func(wait time.Duration) (string, bool) {
		t.Helper()
		select {
		case n := <-notes:
			return n, true
		case <-exited:
			t.Fatalf("daemon exited: %v", exitErr)
		case <-time.After(wait):
		}
		return "", false
	}
	// The daemon reads its state file during start-up, long before READY=1: opening the
	// FIFO for writing returns once it is blocked reading it.
	opened := make(chan *os.File, 1)
	go func() {
		f, err := os.OpenFile(state, os.O_WRONLY, 0)
		if err != nil {
			t.Errorf("open the state fifo: %v", err)
		}
		opened <- f
	}()
	var fifo *os.File
	select {
	case fifo = <-opened:
	case <-exited:
		// Unblock the writer's open before failing.
		if r, oerr := os.OpenFile(state, os.O_RDONLY|unix.O_NONBLOCK, 0); oerr == nil {
			r.Close()
		}
		t.Fatalf("daemon exited before reading its state file: %v", exitErr)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not read its state file within 30s")
	}
	if fifo == nil {
		t.FailNow()
	}
	// Later reads of the state file find a regular file.
	if err := os.WriteFile(state+".new", []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(state+".new", state); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the signal land while start-up is blocked
	if _, err := fifo.WriteString("{}\n"); err != nil {
		select {
		case <-exited:
			t.Fatalf("a SIGHUP during start-up ended the daemon: %v", exitErr)
		case <-time.After(5 * time.Second):
			t.Fatalf("write the state fifo: %v", err)
		}
	}
	fifo.Close()

	first, ok := next(60 * time.Second)
	if !ok {
		t.Fatal("no READY=1 within 60s")
	}
	if !strings.HasPrefix(first, "READY=1\nSTATUS=forwarding: xdp on l0") {
		t.Fatalf("first notification %q, want READY=1 with the status", first)
	}
	// The SIGHUP of the start-up is one reload, once the node is ready.
	if got, _ := next(10 * time.Second); !strings.HasPrefix(got, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("after READY=1: %q, want RELOADING=1 for the SIGHUP received during start-up", got)
	}
	if got, _ := next(10 * time.Second); strings.TrimSpace(got) != "READY=1" {
		t.Fatalf("after the reload: %q, want READY=1", got)
	}
	if got, ok := next(500 * time.Millisecond); ok {
		t.Fatalf("one SIGHUP, but another notification: %q", got)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got, _ := next(10 * time.Second); strings.TrimSpace(got) != "STOPPING=1" {
		t.Fatalf("after SIGTERM: %q, want STOPPING=1", got)
	}
	stopping := time.Now()
	time.Sleep(drain / 4) // inside the drain delay: withdrawing takes milliseconds
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP during the drain delay: %v", err)
	}
	select {
	case got := <-notes:
		t.Errorf("SIGHUP while stopping brought %q, want it ignored", got)
	case <-exited:
	case <-time.After(drain + 20*time.Second):
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("daemon exit after SIGTERM and a SIGHUP during the drain: %v, want exit status 0", exitErr)
		}
		if took := time.Since(stopping); took < drain {
			t.Errorf("exited %s after STOPPING=1, before the %s drain delay ended", took, drain)
		}
	case <-time.After(drain + 20*time.Second):
		t.Fatal("daemon did not exit after SIGTERM")
	}
	// Both SIGHUPs were seen, in the phase the test meant, and only one reload ran.
	out, _ := os.ReadFile(logs.Name())
	for msg, want := range map[string]int{"sighup during start-up": 1, "configuration reloaded": 1, "sighup while stopping: ignored": 1} {
		if got := strings.Count(string(out), msg); got != want {
			t.Errorf("log has %q %d times, want %d", msg, got, want)
		}
	}
}
