package packaging

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/testbed"
)

// previousRelease is the release the systemd test upgrades from: the last one that
// landed before this tree.
const previousRelease = "4401d12"

// systemdPackages are what the booted root holds besides minbase: systemd as PID 1, and
// the tools the NAT data planes and the test's checks run inside it.
var systemdPackages = []string{"systemd", "systemd-sysv", "dbus", "iproute2", "nftables", "iptables", "procps", "curl"}

// TestPrivilegedSystemd runs the package as an operator does, under a real systemd: a
// Debian 12 root boots with systemd as PID 1 (systemd-nspawn) inside the network
// namespace of the testbed's lb1, whose router (BIRD) and backends are real. Every check
// is made from outside the container: the router's routes, connections from the
// testbed's client, the pins in lb1's bpffs.
//
//   - apt install of the previous release's package, an edited config, enable --now;
//   - apt install of this package with connections held: none lost, the config kept;
//   - stop: the route is withdrawn while the daemon still runs, the pins stay;
//   - start: active only once forwarding and announced, STATUS= line, connections kept;
//   - reload at once after start and again under traffic: no restart, new VIP announced;
//   - the journal: priorities, no second timestamp;
//   - kill -9: systemd restarts it, connections kept;
//   - start with the router down: ready after bgp.ready_wait, saying so;
//   - nftables, iptables and socket LB under the unit's hardening;
//   - systemd-analyze security's score.
func TestPrivilegedSystemd(t *testing.T) {
	testutil.RequireCommands(t, "systemd-nspawn", "nsenter", "debootstrap", "dpkg-deb", "git", "make", "go",
		"ip", "ethtool", "sysctl", "bird", "birdc", "curl")
	if testing.Short() {
		t.Skip("boots a container (a minute); not in -short")
	}
	deb := currentDeb(t)
	prev := previousDeb(t, previousRelease)
	newVersion := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version"))
	prevVersion := strings.TrimSpace(run(t, "dpkg-deb", "-f", prev, "Version"))
	if out, err := exec.Command("dpkg", "--compare-versions", prevVersion, "lt", newVersion).CombinedOutput(); err != nil {
		t.Fatalf("package %s does not sort before %s: apt would not upgrade (%v %s)", prevVersion, newVersion, err, out)
	}

	bed := systemdBed(t)
	root := debianRootWith(t, "systemd", systemdPackages)
	for name, src := range map[string]string{"new.deb": deb, "prev.deb": prev} {
		if err := os.WriteFile(filepath.Join(root, "root", name), must(os.ReadFile(src)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ct := bootContainer(t, root, bed.NS("lb1"), bed.LBBPFFS("lb1"))
	conf := filepath.Join(root, "etc/l4lb/l4lb.yaml")
	pins := filepath.Join(bed.LBBPFFS("lb1"), "l4lb")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	routed := func(vip string, want bool) bool {
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		defer wcancel()
		return testbed.Eventually(wctx, func() bool {
			_, hops, err := bed.Route(wctx, vip)
			return err == nil && (hops > 0) == want
		})
	}
	apt := func(deb string) {
		t.Helper()
		start := time.Now()
		ct.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
			"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", deb)
		t.Logf("apt-get install %s: %s", deb, time.Since(start).Round(100*time.Millisecond))
	}
	unit := func(prop string) string {
		t.Helper()
		return strings.TrimSpace(ct.run("systemctl", "show", "-P", prop, "l4lb"))
	}
	held := func(when string, conns []testbed.KeptAlive) {
		t.Helper()
		lost := 0
		for i, c := range conns {
			if be, err := c.Get(); err != nil || be != c.Backend {
				lost++
				t.Errorf("%s: connection %d (to %s): %q, %v", when, i, c.Backend, be, err)
			}
		}
		t.Logf("%s: %d of %d held connections kept their backend", when, len(conns)-lost, len(conns))
	}
	hold := func(n int) []testbed.KeptAlive {
		t.Helper()
		conns, err := bed.OpenKeptAlive(n)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, c := range conns {
				c.C.Close()
			}
		})
		return conns
	}

	// The previous release, as an operator installs and configures it.
	apt("/root/prev.deb")
	edited := nodeConfig(t, "xdp", "")
	if err := os.WriteFile(conf, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	ct.run("systemctl", "enable", "--now", "l4lb")
	if !routed(testbed.VIP4, true) {
		t.Fatalf("previous release: the router has no route to %s\n%s", testbed.VIP4, ct.journal())
	}
	conns := hold(20)

	// The upgrade: the running node is restarted by the package onto the new binary.
	apt("/root/new.deb")
	if got := ct.run("l4lb", "version"); !strings.HasPrefix(got, "l4lb "+newVersion+" ") {
		t.Errorf("after the upgrade, l4lb version: %q, want %s", got, newVersion)
	}
	if got := string(must(os.ReadFile(conf))); got != edited {
		t.Errorf("the upgrade replaced the edited /etc/l4lb/l4lb.yaml:\n%s", got)
	}
	if got := unit("ActiveState"); got != "active" {
		t.Fatalf("after the upgrade l4lb is %s\n%s", got, ct.journal())
	}
	if !routed(testbed.VIP4, true) {
		t.Fatalf("after the upgrade the router has no route to %s", testbed.VIP4)
	}
	held("upgraded to "+newVersion, conns)

	// Stop: the route goes while the daemon still runs (it waits drain_delay after the
	// withdrawal), and the pinned program and maps stay.
	stopped := make(chan string, 1)
	go func() {
		out, err := ct.try("systemctl", "stop", "l4lb")
		stopped <- fmt.Sprint(out, err)
	}()
	if !routed(testbed.VIP4, false) {
		t.Errorf("systemctl stop: the router keeps its route to %s", testbed.VIP4)
	} else if st, _ := ct.try("systemctl", "is-active", "l4lb"); strings.TrimSpace(st) != "deactivating" {
		t.Errorf("the route was withdrawn when l4lb was already %q, want deactivating (withdraw, then drain)", strings.TrimSpace(st))
	}
	if out := <-stopped; out != "<nil>" {
		t.Errorf("systemctl stop: %s", out)
	}
	if entries, err := os.ReadDir(pins); err != nil || len(entries) == 0 {
		t.Errorf("after stop the pins under %s are gone: %v", pins, err)
	}
	if out, _ := bed.Output(ctx, "lb1", "ip", "link", "show", "l0"); !strings.Contains(out, "xdp") {
		t.Errorf("after stop no XDP program on lb1's l0:\n%s", out)
	}

	// Start: systemctl returns once the node forwards and its sessions are up, so the
	// router has the route at once (BIRD installs it within milliseconds of the update;
	// a readiness that did not wait for BGP returns about a second before).
	start := time.Now()
	ct.run("systemctl", "enable", "--now", "l4lb")
	took := time.Since(start)
	pid := unit("MainPID")
	ct.run("systemctl", "reload", "l4lb") // at once after start
	rctx, rcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if !testbed.Eventually(rctx, func() bool { _, hops, err := bed.Route(rctx, testbed.VIP4); return err == nil && hops > 0 }) {
		t.Errorf("systemctl start returned (after %s) with no route to %s on the router within 0.5 s", took.Round(10*time.Millisecond), testbed.VIP4)
	}
	rcancel()
	if !routed(testbed.VIP4, true) {
		t.Fatalf("after start the router has no route to %s\n%s", testbed.VIP4, ct.journal())
	}
	t.Logf("systemctl start returned after %s, the router had the route", took.Round(10*time.Millisecond))
	status := ct.run("systemctl", "status", "--no-pager", "l4lb")
	if !regexp.MustCompile(`Status: "forwarding: xdp on l0 \(adopted\), 5 vips; bgp: 2/2 peers established"`).MatchString(status) {
		t.Errorf("systemctl status has no STATUS line of an adopted, announced node:\n%s", status)
	}
	held("restarted and reloaded", conns)

	// Reload again under traffic, with a new VIP: no restart.
	withVIP := nodeConfig(t, "xdp", extraVIP)
	if err := os.WriteFile(conf, []byte(withVIP), 0o640); err != nil {
		t.Fatal(err)
	}
	traffic := bed.Command(ctx, "client", "sh", "-c", "for i in $(seq 150); do curl -s -m 2 -o /dev/null -w '%{http_code}\\n' http://"+testbed.VIP4+"/ || echo FAILED; done")
	out := make(chan string, 1)
	go func() { b, _ := traffic.CombinedOutput(); out <- string(b) }()
	time.Sleep(300 * time.Millisecond)
	ct.run("systemctl", "reload", "l4lb")
	if !routed("203.0.113.11", true) {
		t.Errorf("reload: the new VIP 203.0.113.11 is not announced\n%s", ct.journal())
	}
	if res := <-out; strings.Count(res, "200\n") != 150 {
		t.Errorf("requests during the reload: %d of 150 answered 200:\n%s", strings.Count(res, "200\n"), res)
	}
	if got := unit("MainPID"); got != pid {
		t.Errorf("reload restarted the daemon: MainPID %s, was %s", got, pid)
	}
	held("reloaded", conns)

	// The journal of this run of the unit: the priority of each line is its level's, and
	// no line carries a timestamp of its own.
	inv := "_SYSTEMD_INVOCATION_ID=" + unit("InvocationID")
	lines := strings.Split(strings.TrimSpace(ct.run("journalctl", "--no-pager", "-o", "cat", inv)), "\n")
	info := strings.Split(strings.TrimSpace(ct.run("journalctl", "--no-pager", "-o", "cat", "-p", "info", inv)), "\n")
	warn := strings.TrimSpace(ct.run("journalctl", "--no-pager", "-o", "cat", "-p", "warning", inv))
	for _, l := range lines {
		if strings.HasPrefix(l, "time=") || strings.HasPrefix(l, "<") {
			t.Errorf("journal line with its own timestamp or an unparsed priority: %q", l)
		}
	}
	if len(lines) < 5 || len(info) != len(lines) {
		t.Errorf("journal: %d lines, %d at priority info or above, want all (and some)", len(lines), len(info))
	}
	for _, l := range strings.Split(warn, "\n") {
		if l != "" && !strings.HasPrefix(l, "level=WARN") && !strings.HasPrefix(l, "level=ERROR") {
			t.Errorf("journalctl -p warning shows a line of another level: %q", l)
		}
	}
	if !strings.Contains(strings.Join(lines, "\n"), `level=INFO msg="configuration reloaded"`) {
		t.Errorf("journal has no reload line:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("journal of the run: %d lines, %d at warning or above", len(lines), len(strings.Fields(warn)))

	// kill -9: systemd restarts the daemon (Restart=on-failure), which adopts the pins.
	restarts := unit("NRestarts")
	ct.run("kill", "-9", unit("MainPID"))
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	back := testbed.Eventually(wctx, func() bool {
		return unit("NRestarts") != restarts && unit("ActiveState") == "active"
	})
	wcancel()
	if !back {
		t.Fatalf("kill -9: systemd did not restart l4lb (NRestarts %s, %s)\n%s", unit("NRestarts"), unit("ActiveState"), ct.journal())
	}
	routed(testbed.VIP4, true)
	held("after kill -9 and systemd's restart", conns)

	// Start while the router is down: readiness waits bgp.ready_wait for the sessions,
	// then reports ready anyway and says so; the route comes once the router is back.
	if err := os.WriteFile(conf, []byte(strings.Replace(edited, "  listen_port: -1\n", "  listen_port: -1\n  ready_wait: 3s\n", 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	ct.run("systemctl", "stop", "l4lb")
	for _, p := range []string{"lb1_v4", "lb1_v6"} {
		if out, err := bed.Birdc(ctx, "disable", p); err != nil {
			t.Fatalf("birdc disable %s: %v %s", p, err, out)
		}
	}
	start = time.Now()
	ct.run("systemctl", "start", "l4lb")
	took = time.Since(start)
	if took < 3*time.Second {
		t.Errorf("with the router down, systemctl start returned after %s, before bgp.ready_wait (3s)", took.Round(10*time.Millisecond))
	}
	if got := unit("StatusText"); !strings.HasSuffix(got, "; bgp: 0/2 peers established after 3s") {
		t.Errorf("with the router down, STATUS= %q: want it to say no session is up", got)
	}
	t.Logf("router down: systemctl start returned after %s: %s", took.Round(10*time.Millisecond), unit("StatusText"))
	for _, p := range []string{"lb1_v4", "lb1_v6"} {
		if out, err := bed.Birdc(ctx, "enable", p); err != nil {
			t.Fatalf("birdc enable %s: %v %s", p, err, out)
		}
	}
	if !routed(testbed.VIP4, true) {
		t.Errorf("the router came back but has no route to %s", testbed.VIP4)
	}
	held("after a start with the router down", conns)

	score := ct.run("systemd-analyze", "security", "--no-pager", "l4lb")
	if m := regexp.MustCompile(`Overall exposure level for l4lb.service: ([0-9.]+)`).FindStringSubmatch(score); m != nil {
		t.Logf("systemd-analyze security l4lb (systemd as PID 1): %s", m[1])
	} else {
		t.Errorf("systemd-analyze security printed no score:\n%s", score)
	}

	// The other data planes under the unit's hardening. Each starts from a clean node.
	for _, tc := range []struct {
		mode, check string
	}{
		{"nftables", "client"}, {"iptables", "client"}, {"socket", "local"},
	} {
		ct.run("systemctl", "stop", "l4lb")
		ct.run("l4lb", "cleanup", "--config", "/etc/l4lb/l4lb.yaml")
		if tc.mode != "socket" {
			bed.In("lb1", "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
		}
		if err := os.WriteFile(conf, []byte(nodeConfig(t, tc.mode, "")), 0o640); err != nil {
			t.Fatal(err)
		}
		if out, err := ct.try("systemctl", "start", "l4lb"); err != nil {
			t.Errorf("%s: systemctl start: %v %s\n%s", tc.mode, err, out, ct.journal())
			continue
		}
		var ok int
		for i := 0; i < 10; i++ {
			var out string
			if tc.check == "client" {
				out, _ = bed.Output(ctx, "client", "curl", "-s", "-m", "2", "http://"+testbed.VIP4+"/")
			} else {
				// A process of the container's own cgroup tree, where the socket LB
				// attaches (nsenter's process stays in the host's cgroup).
				out, _ = ct.try("systemd-run", "--quiet", "--wait", "--pipe", "--collect", "curl", "-s", "-m", "2", "http://"+testbed.VIP4+"/")
			}
			if strings.HasPrefix(strings.TrimSpace(out), "be") {
				ok++
			}
		}
		if ok != 10 {
			t.Errorf("%s under the unit: %d of 10 requests reached a backend\n%s", tc.mode, ok, ct.journal())
		}
		t.Logf("%s under the unit: %s; %d of 10 requests reached a backend", tc.mode, strings.TrimSpace(unit("StatusText")), ok)
	}
	ct.run("systemctl", "stop", "l4lb")
	ct.run("l4lb", "cleanup", "--config", "/etc/l4lb/l4lb.yaml")
}

// TestPrivilegedSystemdIPVS runs the IPVS data plane under the unit's hardening, as
// TestPrivilegedSystemd runs the others: the package installed in a systemd container in
// lb1's namespace, dataplane: ipvs (tunnel), requests from the client. This machine's
// kernel has no IPVS: the kernel suite runs it on Debian's kernels (make test-kernels),
// with the modules loaded beforehand, as the unit cannot load them.
func TestPrivilegedSystemdIPVS(t *testing.T) {
	testutil.RequireCommands(t, "systemd-nspawn", "nsenter", "dpkg-deb", "ip", "ethtool", "sysctl", "bird", "birdc", "curl")
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		if os.Getenv("L4LB_VMTEST") != "" {
			t.Fatalf("no IPVS in the kernel suite's kernel: %v", err)
		}
		t.Skip("no IPVS in this kernel (/proc/net/ip_vs): make test-kernels runs this test on Debian's kernels")
	}
	deb := currentDeb(t)
	bed := systemdBed(t)
	root := debianRootWith(t, "systemd", systemdPackages)
	if err := os.WriteFile(filepath.Join(root, "root", "new.deb"), must(os.ReadFile(deb)), 0o644); err != nil {
		t.Fatal(err)
	}
	ct := bootContainer(t, root, bed.NS("lb1"), bed.LBBPFFS("lb1"))
	ct.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "/root/new.deb")
	bed.In("lb1", "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	if err := os.WriteFile(filepath.Join(root, "etc/l4lb/l4lb.yaml"), []byte(nodeConfig(t, "ipvs", "")), 0o640); err != nil {
		t.Fatal(err)
	}
	ct.run("systemctl", "enable", "--now", "l4lb")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ok := 0
	for i := 0; i < 10; i++ {
		if out, _ := bed.Output(ctx, "client", "curl", "-s", "-m", "5", "http://"+testbed.VIP4+"/"); strings.HasPrefix(strings.TrimSpace(out), "be") {
			ok++
		}
	}
	status := strings.TrimSpace(ct.run("systemctl", "show", "-P", "StatusText", "l4lb"))
	if ok != 10 {
		t.Errorf("ipvs under the unit: %d of 10 requests reached a backend (%s)\n%s", ok, status, ct.journal())
	}
	t.Logf("ipvs under the unit: %s; %d of 10 requests reached a backend", status, ok)
	ct.run("systemctl", "stop", "l4lb")
	ct.run("l4lb", "cleanup", "--config", "/etc/l4lb/l4lb.yaml")
}

// extraVIP is a VIP a reload adds (announced; the backends do not serve it).
const extraVIP = `
  - name: web-extra
    address: 203.0.113.11
    port: 80
    protocol: tcp
    backends:
      - address: 203.0.113.18
`

// nodeConfig is lb1's testbed config as the container's /etc/l4lb/l4lb.yaml: pins and
// state where the unit may write, the data plane mode, extra VIPs appended. It uses only
// keys the previous release knows.
func nodeConfig(t *testing.T, mode, extraVIPs string) string {
	t.Helper()
	b, err := os.ReadFile("../conf/testbed/lb1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, repl := range map[string]string{
		"bpffs: /run/l4lb-testbed/lb1/bpffs/l4lb":      "bpffs: /sys/fs/bpf/l4lb",
		"state_file: /run/l4lb-testbed/lb1/state.json": "state_file: /var/lib/l4lb/state.json",
		"dataplane: xdp": "dataplane: " + mode,
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("conf/testbed/lb1.yaml has no %q", old)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	// The previous release has no tunnel health checks.
	s = strings.ReplaceAll(s, ", via: tunnel", "")
	if mode == "socket" {
		// Socket LB alone balances local clients; nothing is announced.
		s = strings.Replace(strings.Replace(s, "  enabled: true", "  enabled: false", 1), "interfaces: [l0]", "interfaces: []", 1) +
			"\nsocket_lb:\n  enabled: true\n"
	}
	return "# /etc/l4lb/l4lb.yaml, edited by the operator\n" + s + extraVIPs
}

// systemdBed brings up the testbed with no l4lb of its own on the LB nodes: lb1's is the
// container's.
func systemdBed(t *testing.T) *testbed.Bed {
	t.Helper()
	dir := t.TempDir()
	bins := map[string]string{"l4lb": os.Getenv("L4LB_BINARY"), "testbed": os.Getenv("L4LB_TESTBED_BINARY")}
	for name, pkg := range map[string]string{"l4lb": "cmd/l4lb", "testbed": "testbed/cmd/testbed"} {
		if bins[name] != "" { // the kernel suite builds them on the host
			continue
		}
		bins[name] = filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", bins[name], "github.com/l4lb/l4lb/"+pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	var r [3]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	bed := testbed.New(testbed.Config{
		Prefix: "l4lbs" + hex.EncodeToString(r[:]) + "-", Dir: filepath.Join(dir, "bed"),
		L4LB: bins["l4lb"], Self: bins["testbed"],
		LBConfig: func(string) (string, []string) { return "", nil },
		External: testbed.LBNodes,
	})
	t.Cleanup(func() {
		if err := bed.Down(); err != nil {
			t.Errorf("testbed down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := bed.Up(ctx); err != nil {
		t.Fatalf("testbed up: %v", err)
	}
	return bed
}

// container is a Debian root booted by systemd-nspawn with systemd as PID 1.
type container struct {
	t      *testing.T
	nspawn *exec.Cmd
	leader int // the container's PID 1, as the host sees it
}

// bootContainer boots root in the network namespace netns with bpffs as its
// /sys/fs/bpf, and waits until systemd reports the system running. The container is
// powered off (killed if it does not stop) when the test ends.
func bootContainer(t *testing.T, root, netns, bpffs string) *container {
	t.Helper()
	var r [3]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "nspawn.log"))
	if err != nil {
		t.Fatal(err)
	}
	// --keep-unit and --register=no: this host has no systemd to make a scope or register
	// the machine with. All capabilities, and nspawn's system call filter opened for what
	// l4lb needs (bpf returns EPERM in a container by default): the unit's own bounding
	// set and filter are what is tested.
	cmd := exec.Command("systemd-nspawn", "--quiet", "--boot", "--register=no", "--keep-unit",
		"--machine=l4lb-"+hex.EncodeToString(r[:]), "--directory="+root,
		"--network-namespace-path=/run/netns/"+netns, "--bind="+bpffs+":/sys/fs/bpf",
		"--capability=all", "--system-call-filter=bpf perf_event_open", "--console=passive")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &container{t: t, nspawn: cmd}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		if c.leader != 0 {
			c.try("systemctl", "poweroff")
		}
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			if c.leader != 0 {
				syscall.Kill(c.leader, syscall.SIGKILL)
			}
			cmd.Process.Kill()
			<-exited
		}
	})
	// Under QEMU without KVM (the kernel suite) nspawn and systemd take minutes.
	boot := 90 * time.Second
	if os.Getenv("L4LB_VMTEST") != "" {
		boot = 4 * time.Minute
	}
	deadline := time.Now().Add(boot)
	for ; time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		// nspawn's first child (the outer child) sets up and exits; the container's
		// init is the child after it. Read it again until systemd answers.
		if c.leader = child(cmd.Process.Pid); c.leader == 0 {
			continue
		}
		st, _ := c.try("systemctl", "is-system-running")
		if st = strings.TrimSpace(st); st == "running" || st == "degraded" {
			t.Logf("container booted (systemd: %s)", st)
			if st == "degraded" {
				t.Logf("failed units:\n%s", c.run("systemctl", "--failed", "--no-pager"))
			}
			return c
		}
	}
	var state string
	if c.leader != 0 {
		for _, args := range [][]string{{"systemctl", "is-system-running"}, {"systemctl", "list-jobs", "--no-pager"}, {"journalctl", "-b", "--no-pager", "-n", "40"}} {
			out, err := c.try(args...)
			state += fmt.Sprintf("$ %s (%v)\n%s\n", strings.Join(args, " "), err, out)
		}
	}
	t.Fatalf("the container did not boot in %s:\n%s\n%s", boot, must(os.ReadFile(logf.Name())), state)
	return nil
}

// child is the first child of pid (0: none yet).
func child(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// try runs a command inside the container (all its namespaces) with a clean environment.
func (c *container) try(args ...string) (string, error) {
	// --root and --wd: the container's root is its init's, not the mount namespace's
	// (inside the kernel suite's chroot, nspawn moves it onto the chroot, not onto /).
	full := append([]string{"-t", strconv.Itoa(c.leader), "-m", "-u", "-i", "-n", "-p", "-C", "--root", "--wd", "--",
		"env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_COLORS=0", "LANG=C.UTF-8"}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	return string(out), err
}

// run is try that fails the test on an error.
func (c *container) run(args ...string) string {
	c.t.Helper()
	out, err := c.try(args...)
	if err != nil {
		c.t.Fatalf("in the container: %s: %v\n%s\nthe unit's journal:\n%s", strings.Join(args, " "), err, out, c.journal())
	}
	return out
}

// journal is the unit's recent journal, for failure messages.
func (c *container) journal() string {
	out, _ := c.try("journalctl", "--no-pager", "-u", "l4lb", "-n", "60")
	return out
}
