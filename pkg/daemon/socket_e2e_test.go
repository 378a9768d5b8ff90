package daemon_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/daemon"
)

// TestPrivilegedSocketDataplane runs the real l4lb with dataplane: socket in an
// application namespace: curl, started in a test cgroup, reaches the VIP's backends
// straight from connect(); health checks and drain steer new connects as in XDP; a
// stopped daemon's pinned hooks keep balancing and `l4lb cleanup` restores plain
// behaviour.
func TestPrivilegedSocketDataplane(t *testing.T) { testSocketNode(t, false) }

// TestPrivilegedSocketLBBesideXDP is the same with dataplane: xdp attached to an
// interface and socket_lb.enabled: the mode stays xdp, the socket LB shares its maps.
func TestPrivilegedSocketLBBesideXDP(t *testing.T) { testSocketNode(t, true) }

func testSocketNode(t *testing.T, besideXDP bool) {
	testutil.RequireCommands(t, "ip", "curl")
	bin := buildBinary(t)
	dir := t.TempDir()
	ns := testutil.NewNetNS(t, "app")
	backends := []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"}
	listeners := map[string]net.Listener{}
	for _, a := range backends {
		ns.Run(t, "ip", "addr", "add", a+"/32", "dev", "lo")
		if err := ns.Do(func() error {
			l, err := net.Listen("tcp4", a+":80")
			listeners[a] = l
			return err
		}); err != nil {
			t.Fatal(err)
		}
		l, name := listeners[a], "be-"+a
		t.Cleanup(func() { l.Close() })
		go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
	}

	fs := filepath.Join(dir, "bpffs")
	os.Mkdir(fs, 0o700)
	if err := unix.Mount("bpf", fs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(fs, 0) })
	// `ip netns exec` mounts a fresh /sys, hiding the cgroup2 mount under it: mount the
	// (one) cgroup2 hierarchy again outside /sys, where the daemon sees it too.
	root := filepath.Join(dir, "cgroup2")
	os.Mkdir(root, 0o755)
	if err := unix.Mount("cgroup2", root, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mount cgroup2: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(root, 0); err != nil {
			t.Errorf("unmount cgroup2: %v", err)
		}
	})
	var rnd [3]byte
	rand.Read(rnd[:])
	cg := filepath.Join(root, "l4lbt-app-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 50; i++ {
			if err := os.Remove(cg); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("remove cgroup %s", cg)
	})
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("s3cret\n"), 0o600)
	cfgPath := filepath.Join(dir, "l4lb.yaml")
	head, mode := "dataplane: socket\n", "socket"
	if besideXDP {
		peer := testutil.NewNetNS(t, "peer")
		testutil.Veth(t, ns, "l0", peer, "p0")
		head, mode = `dataplane: xdp
interfaces: [l0]
encap: {source4: 192.0.2.0/26}
nexthop: {mac: "02:00:00:00:00:01"}
`, "xdp"
	}
	cfg := fmt.Sprintf(`%sbpffs: %s/l4lb
state_file: %s/state.json
drain_delay: 0s
socket_lb:
  enabled: %v
  cgroup: %s
admin:
  listen: 127.0.0.1:9100
  token_file: %s
vips:
  - name: web
    address: 203.0.113.10
    port: 80
    protocol: tcp
    health: {type: tcp, interval: 1s, timeout: 1s, rise: 1, fall: 2}  # loose: QEMU without KVM is slow
    backends:
      - address: 198.51.100.1
      - address: 198.51.100.2
      - address: 198.51.100.3
`, head, fs, dir, besideXDP, cg, token)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs, _ := os.Create(filepath.Join(dir, "l4lb.log"))
	t.Cleanup(func() {
		logs.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logs.Name())
			t.Logf("l4lb log:\n%s", out)
		}
		exec.Command("ip", "netns", "exec", ns.Name(), bin, "cleanup", "--config", cfgPath).Run()
	})

	cgf, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer cgf.Close()
	// curl in the namespace; in the test cgroup when inCgroup.
	curl := func(inCgroup bool, args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name(), "curl", "-sS", "--max-time", "2"}, args...)...)
		if inCgroup {
			cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// spread runs n curls to the vip in one shell in the cgroup (one `ip netns exec`:
	// cheaper under QEMU), each answer on its own line; a failure fails the test.
	spread := func(n int) map[string]int {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", ns.Name(), "sh", "-c",
			fmt.Sprintf("for i in $(seq %d); do curl -sS --max-time 2 http://203.0.113.10/ || exit 1; echo; done", n))
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl the vip: %v: %s", err, out)
		}
		got := map[string]int{}
		for _, l := range strings.Fields(string(out)) {
			got[l]++
		}
		return got
	}
	adminGet := func(path string, v any) {
		t.Helper()
		out, err := curl(false, "http://127.0.0.1:9100"+path)
		if err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, out)
		}
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("GET %s: %v: %s", path, err, out)
		}
	}

	start := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", ns.Name(), bin, "run", "--config", cfgPath)
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		return cmd
	}
	daemonCmd := start()
	// Generous: under QEMU without KVM a start (loading and verifying the programs) takes
	// seconds.
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if ok() {
				return
			}
		}
		t.Fatalf("%s: not within 30s", what)
	}
	waitFor("ready", func() bool { _, err := curl(false, "-f", "http://127.0.0.1:9100/readyz"); return err == nil })

	if got := spread(30); len(got) != 3 {
		t.Fatalf("30 connects reached %v, want all three backends", got)
	}
	if out, err := curl(false, "http://203.0.113.10/"); err == nil {
		t.Fatalf("curl outside the cgroup reached the vip: %s", out)
	}

	// Health and drain act on the shared rings the same way in both modes; the
	// dataplane: socket run checks them (the VM runs both tests, each curl is slow there).
	connects := 30
	if !besideXDP {
		connects += 30
		healthAndDrain(t, listeners, adminGet, waitFor, spread, curl)
	}

	var v daemon.View
	adminGet("/v1/state", &v)
	if v.Mode != mode || v.SocketLB == nil || !v.SocketLB.Attached || v.SocketLB.Cgroup != cg ||
		v.VIPs[0].Socket == nil || v.VIPs[0].Socket.Connects != uint64(connects) || v.VIPs[0].Packets != 0 {
		t.Errorf("state: mode %s, socket lb %+v, vip %+v; want %d socket connects and no packets", v.Mode, v.SocketLB, v.VIPs[0], connects)
	}
	// Every connect is sampled (sample_every 1): one row, curl in the test cgroup, one
	// process per connect.
	var s daemon.SocketsView
	waitFor("sampled clients", func() bool {
		adminGet("/v1/sockets", &s)
		return len(s.VIPs) == 1 && len(s.VIPs[0].Clients) == 1 && s.VIPs[0].Clients[0].Connects == uint64(connects)
	})
	if c := s.VIPs[0].Clients[0]; c.Comm != "curl" || c.PIDs != connects || s.Cgroups[c.CgroupID] != "/"+filepath.Base(cg) {
		t.Errorf("sampled client %+v (cgroups %v), want curl from %d pids in %s", c, s.Cgroups, connects, cg)
	}

	noBackendShows(t, besideXDP, curl)

	// A stop without cleanup leaves the pinned hooks balancing.
	daemonCmd.Process.Signal(syscall.SIGTERM)
	daemonCmd.Wait()
	if got := spread(5); !besideXDP && got["be-198.51.100.2"] != 5 { // spread fails on any error
		t.Fatalf("with the daemon stopped: %v", got)
	}
	if besideXDP {
		// Restarted with socket_lb off, the node removes the hooks a previous run pinned.
		if err := os.WriteFile(cfgPath, []byte(strings.Replace(cfg, "enabled: true", "enabled: false", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		daemonCmd = start()
		waitFor("ready again", func() bool { _, err := curl(false, "-f", "http://127.0.0.1:9100/readyz"); return err == nil })
		if out, err := curl(true, "http://203.0.113.10/"); err == nil {
			t.Fatalf("socket_lb turned off, curl in the cgroup still reached the vip: %s", out)
		}
		daemonCmd.Process.Signal(syscall.SIGTERM)
		daemonCmd.Wait()
	}
	if out, err := exec.Command("ip", "netns", "exec", ns.Name(), bin, "cleanup", "--config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("l4lb cleanup: %v: %s", err, out)
	}
	if out, err := curl(true, "http://203.0.113.10/"); err == nil || !strings.Contains(out, "Couldn't connect") && !strings.Contains(out, "unreachable") {
		t.Fatalf("after cleanup, curl in the cgroup: %v: %s; want the plain kernel's failure", err, out)
	}
}

// healthAndDrain: a backend that stops answering, then a drained one, get no new
// connects (30 in all).
func healthAndDrain(t *testing.T, listeners map[string]net.Listener, adminGet func(string, any),
	waitFor func(string, func() bool), spread func(int) map[string]int, curl func(bool, ...string) (string, error)) {
	t.Helper()
	listeners["198.51.100.3"].Close()
	waitFor("backend down", func() bool {
		var v daemon.View
		adminGet("/v1/state", &v)
		return len(v.VIPs) == 1 && len(v.VIPs[0].Backends) == 3 && !v.VIPs[0].Backends[2].Healthy
	})
	if got := spread(20); got["be-198.51.100.3"] != 0 || got["be-198.51.100.1"]+got["be-198.51.100.2"] != 20 {
		t.Fatalf("after .3 went down: %v", got)
	}
	// Drain: answered once applied.
	if out, err := curl(false, "-f", "-X", "POST", "-H", "Authorization: Bearer s3cret",
		"http://127.0.0.1:9100/v1/vips/web/backends/198.51.100.1/drain"); err != nil {
		t.Fatalf("drain: %v: %s", err, out)
	}
	if got := spread(10); got["be-198.51.100.2"] != 10 {
		t.Fatalf("after draining .1: %v, want all on .2", got)
	}
}

// noBackendShows: with every backend of web drained, a connect in the cgroup is left to
// the network (and fails); the monitor's recent drops name it, with curl as the program.
// The backends are undrained after.
func noBackendShows(t *testing.T, besideXDP bool, curl func(bool, ...string) (string, error)) {
	t.Helper()
	serving := []string{"198.51.100.2"} // healthAndDrain left .1 drained and .3 down
	if besideXDP {
		serving = []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"}
	}
	post := func(path string) {
		t.Helper()
		if out, err := curl(false, "-f", "-X", "POST", "-H", "Authorization: Bearer s3cret", "http://127.0.0.1:9100"+path); err != nil {
			t.Fatalf("POST %s: %v: %s", path, err, out)
		}
	}
	for _, b := range serving {
		post("/v1/vips/web/backends/" + b + "/drain")
	}
	if out, err := curl(true, "http://203.0.113.10/"); err == nil {
		t.Fatalf("every backend drained, curl in the cgroup reached the vip: %s", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := curl(false, "http://127.0.0.1:9100/v1/monitor/recent")
		var rv struct {
			Drops []struct {
				Source, Reason, Dst, VIP, Process string
			} `json:"drops"`
		}
		found := false
		if json.Unmarshal([]byte(out), &rv) == nil {
			for _, d := range rv.Drops {
				found = found || d.Source == "socket" && d.Reason == "sock_no_backend" && d.Dst == "203.0.113.10:80" &&
					d.VIP == "web" && strings.HasPrefix(d.Process, "curl[")
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sock_no_backend drop of curl to web in the recent drops: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, b := range serving {
		post("/v1/vips/web/backends/" + b + "/undrain")
	}
}
