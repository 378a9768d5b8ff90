// Package testbed builds, in network namespaces on one machine, a small network with a real
// BGP router (BIRD), two l4lb nodes, three backends and a client: the place where the demo,
// the end-to-end tests and the benchmarks run.
//
//	client ---- router ----- lb1, lb2     (eBGP, ECMP; LB on a stick)
//	              |
//	              +--------- be1, be2, be3 (decap, VIPs on lo, http :80, udp :53)
//
// Everything the testbed starts runs detached, in its namespaces, so it outlives the
// command that brought it up; Down ends those processes by the PIDs the kernel lists for
// each namespace, deletes the namespaces and unmounts the LB nodes' bpffs.
package testbed

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Addresses of the topology, from the documentation ranges only (RFC 5737, RFC 3849).
const (
	VIP4      = "203.0.113.10"
	VIP6      = "2001:db8:f::10"
	Client4   = "198.51.100.2"
	Client6   = "2001:db8:c::2"
	RouterASN = 65000
	LBASN     = 65001
)

// Node names without the prefix.
var (
	LBNodes      = []string{"lb1", "lb2"}
	BackendNodes = []string{"be1", "be2", "be3"}
	Nodes        = append(append([]string{"client", "router"}, LBNodes...), BackendNodes...)
)

// LBLink4 and friends give each LB's and backend's link addresses.
func lbIndex(lb string) int { return slices.Index(LBNodes, lb) + 1 }
func beIndex(be string) int { return slices.Index(BackendNodes, be) + 1 }

// LBAddr4 is the LB node's address on its link to the router (192.0.2.8N+2/29).
func LBAddr4(lb string) string { return fmt.Sprintf("192.0.2.%d", 8*lbIndex(lb)+2) }

// RouterLBAddr4 is the router's end of that link.
func RouterLBAddr4(lb string) string { return fmt.Sprintf("192.0.2.%d", 8*lbIndex(lb)+1) }

// LBAddr6 is the LB node's IPv6 address on its link to the router.
func LBAddr6(lb string) string { return fmt.Sprintf("2001:db8:1:%d::2", lbIndex(lb)) }

// RouterLBAddr6 is the router's end.
func RouterLBAddr6(lb string) string { return fmt.Sprintf("2001:db8:1:%d::1", lbIndex(lb)) }

// EncapSource4 is the prefix the LB node's XDP data plane takes outer IPv4 sources from
// (encap.source4 of conf/testbed/lbN.yaml).
func EncapSource4(lb string) string { return fmt.Sprintf("192.0.2.%d/26", 64*lbIndex(lb)) }

// EncapSource6 is the LB node's encap.source6.
func EncapSource6(lb string) string { return fmt.Sprintf("2001:db8:e:%d::/64", lbIndex(lb)) }

// LBSources are the outer sources the backends' decap accepts: every LB node's encap
// prefixes (XDP) and its own link addresses (IPVS tunnels from the node's address).
func LBSources() []string {
	var out []string
	for _, lb := range LBNodes {
		out = append(out, EncapSource4(lb), EncapSource6(lb), LBAddr4(lb)+"/32", LBAddr6(lb)+"/128")
	}
	return out
}

// BackendAddr4 is the backend's address (203.0.113.16N+2/28).
func BackendAddr4(be string) string { return fmt.Sprintf("203.0.113.%d", 16*beIndex(be)+2) }

// BackendAddr6 is the backend's IPv6 address.
func BackendAddr6(be string) string { return fmt.Sprintf("2001:db8:b:%d::2", beIndex(be)) }

// Config says where the testbed lives and what it runs.
type Config struct {
	// Prefix of every namespace name: "l4lb-" for the demo (l4lb-client, l4lb-router, ...);
	// tests use a unique one.
	Prefix string
	// Dir holds the generated configs, logs, pid files and the LB nodes' bpffs mounts.
	Dir string
	// L4LB is the l4lb binary; Self is the testbed binary (its `serve` command is the
	// backends' server).
	L4LB, Self string
	// Decap, if set, is the l4lb binary the backends and the router run `decap` with
	// instead of L4LB (an upgrade test runs a previous release on the LB nodes only).
	Decap string
	// LBConfig returns the l4lb config file for an LB node; env are extra L4LB_* overrides.
	LBConfig func(lb string) (path string, env []string)
	// Mode, if set, is the data plane the LB nodes run (L4LB_DATAPLANE: auto, xdp,
	// nftables, iptables) instead of their config's. Up remembers it for StartLB.
	Mode string
	// NodeModes overrides Mode per LB node (a fleet that mixes modes; tests).
	NodeModes map[string]string
	// External names LB nodes on which Up starts no l4lb: their namespace, links and
	// bpffs mount (LBBPFFS) are made, and the caller runs l4lb there itself (the
	// packaging test boots a systemd container in the node's namespace).
	External []string
}

// Bed is a testbed, up or not.
type Bed struct{ cfg Config }

// New returns the testbed of cfg; it touches nothing.
func New(cfg Config) *Bed { return &Bed{cfg: cfg} }

// L4LB is the l4lb binary the testbed runs.
func (b *Bed) L4LB() string { return b.cfg.L4LB }

// LogPath is the log file of a process Start started on a node.
func (b *Bed) LogPath(node, name string) string { return b.path("logs", node+"-"+name+".log") }

// SetL4LB changes the l4lb binary that StartLB runs from now on (an upgrade).
func (b *Bed) SetL4LB(path string) { b.cfg.L4LB = path }

// Self is the testbed binary (its udp command is a UDP client).
func (b *Bed) Self() string { return b.cfg.Self }

// NS is a node's namespace name.
func (b *Bed) NS(node string) string { return b.cfg.Prefix + node }

func (b *Bed) path(parts ...string) string {
	return filepath.Join(append([]string{b.cfg.Dir}, parts...)...)
}

// run runs a command and returns an error with its output.
func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// In runs a command in a node's namespace.
func (b *Bed) In(node string, args ...string) error {
	return run(append([]string{"ip", "netns", "exec", b.NS(node)}, args...)...)
}

// Output runs a command in a node's namespace and returns its standard output.
func (b *Bed) Output(ctx context.Context, node string, args ...string) (string, error) {
	cmd := b.Command(ctx, node, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", node, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Command returns a command that runs in a node's namespace (testbed exec).
func (b *Bed) Command(ctx context.Context, node string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", b.NS(node)}, args...)...)
}

// Start starts a detached process in a node's namespace, logging to DIR/logs/NODE-NAME.log
// and recording its PID in DIR/pids/NODE-NAME.pid.
func (b *Bed) Start(node, name string, env []string, args ...string) error {
	for _, d := range []string{"logs", "pids"} {
		if err := os.MkdirAll(b.path(d), 0o755); err != nil {
			return err
		}
	}
	log, err := os.OpenFile(b.path("logs", node+"-"+name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", b.NS(node)}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s on %s: %w", name, node, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it ends while we run; it is detached otherwise.
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(b.path("pids", node+"-"+name+".pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

// PID returns the PID of a process Start started, if it still runs.
func (b *Bed) PID(node, name string) (int, bool) {
	raw, err := os.ReadFile(b.path("pids", node+"-"+name+".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return pid, false
	}
	// A zombie still answers kill 0.
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pid, false
	}
	if f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:])); len(f) > 0 && f[0] == "Z" {
		return pid, false
	}
	// A PID from an old pid file may belong to another process by now: it counts only if
	// it lives in the node's namespace.
	if !sameFile(fmt.Sprintf("/proc/%d/ns/net", pid), filepath.Join("/run/netns", b.NS(node))) {
		return pid, false
	}
	return pid, true
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// Signal sends sig to a process Start started and, for SIGTERM and SIGKILL, waits up to
// timeout for it to end (then kills it).
func (b *Bed) Signal(node, name string, sig syscall.Signal, timeout time.Duration) error {
	pid, alive := b.PID(node, name)
	if !alive {
		return fmt.Errorf("%s on %s is not running", name, node)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return err
	}
	if sig != syscall.SIGTERM && sig != syscall.SIGKILL {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, alive := b.PID(node, name); !alive {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("%s on %s did not stop within %s; killed", name, node, timeout)
}

// existing returns the testbed's namespaces that exist now.
func (b *Bed) existing() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var have []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		for _, n := range Nodes {
			if f[0] == b.NS(n) {
				have = append(have, n)
			}
		}
	}
	return have, nil
}

// Down removes everything of the testbed, including what a crashed run left: the
// processes in its namespaces (by the PIDs the kernel lists), the namespaces, the bpffs
// mounts under Dir and Dir itself. It is a no-op when nothing is there.
func (b *Bed) Down() error {
	var errs []error
	have, err := b.existing()
	if err != nil {
		return err
	}
	for _, n := range have {
		errs = append(errs, killAll(b.NS(n)))
	}
	for _, n := range have {
		if err := run("ip", "netns", "del", b.NS(n)); err != nil {
			errs = append(errs, err)
		}
	}
	mounts, err := mountsUnder(b.cfg.Dir)
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range mounts {
		if err := syscall.Unmount(m, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if err := os.RemoveAll(b.cfg.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killAll ends every process in a namespace: SIGTERM, then SIGKILL after two seconds.
func killAll(ns string) error {
	pids := func() []int {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		var ps []int
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
				ps = append(ps, p)
			}
		}
		return ps
	}
	ps := pids()
	for _, p := range ps {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	for deadline := time.Now().Add(2 * time.Second); len(ps) > 0 && time.Now().Before(deadline); ps = pids() {
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range ps {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(2 * time.Second); len(ps) > 0 && time.Now().Before(deadline); ps = pids() {
		time.Sleep(50 * time.Millisecond)
	}
	if len(ps) > 0 {
		return fmt.Errorf("processes %v in %s did not end", ps, ns)
	}
	return nil
}

func mountsUnder(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && (fields[1] == abs || strings.HasPrefix(fields[1], abs+"/")) {
			out = append(out, fields[1])
		}
	}
	// Deepest first.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, sc.Err()
}

// veth connects two nodes, both ends up, with tx checksum offload off (native XDP on a veth
// loses the sender's partial checksum).
func (b *Bed) veth(a, aIf, z, zIf string, mtu int) error {
	m := strconv.Itoa(mtu)
	if err := b.In(a, "ip", "link", "add", aIf, "mtu", m, "type", "veth", "peer", "name", zIf, "mtu", m, "netns", b.NS(z)); err != nil {
		return err
	}
	for _, end := range [][2]string{{a, aIf}, {z, zIf}} {
		if err := b.In(end[0], "ip", "link", "set", end[1], "up"); err != nil {
			return err
		}
		if err := b.In(end[0], "ethtool", "-K", end[1], "tx", "off"); err != nil {
			return err
		}
	}
	return nil
}

type step []string

// Up builds the testbed from scratch (removing a stale one first) and starts BIRD, the
// backends and l4lb on every LB node. It returns once every process started; use Wait*
// for BGP and routes.
func (b *Bed) Up(ctx context.Context) error {
	if b.cfg.Prefix == "" || b.cfg.Dir == "" || b.cfg.L4LB == "" || b.cfg.Self == "" || b.cfg.LBConfig == nil {
		return errors.New("testbed: Prefix, Dir, L4LB, Self and LBConfig are required")
	}
	for _, lb := range b.cfg.External {
		if !slices.Contains(LBNodes, lb) {
			return fmt.Errorf("testbed: external node %q is not an LB node (%v)", lb, LBNodes)
		}
	}
	var missing []string
	for _, c := range []string{"ip", "ethtool", "sysctl", "bird", "birdc", b.cfg.L4LB, cmp.Or(b.cfg.Decap, b.cfg.L4LB), b.cfg.Self} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s (make deps installs the packages, make build the binaries)", strings.Join(missing, ", "))
	}
	if err := b.Down(); err != nil {
		return fmt.Errorf("remove the stale testbed: %w", err)
	}
	if err := os.MkdirAll(b.cfg.Dir, 0o755); err != nil {
		return err
	}
	for _, n := range Nodes {
		if err := run("ip", "netns", "add", b.NS(n)); err != nil {
			return err
		}
		for _, s := range []step{
			{"ip", "link", "set", "lo", "up"},
			{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
				"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"},
		} {
			if err := b.In(n, s...); err != nil {
				return err
			}
		}
	}
	steps := map[string][]step{}
	add := func(n string, s ...string) { steps[n] = append(steps[n], s) }

	// client <-> router
	// The client's link has the usual MTU; the links that carry encapsulated packets have
	// room for the outer header.
	if err := b.veth("client", "c0", "router", "rc", 1500); err != nil {
		return err
	}
	add("client", "ip", "addr", "add", Client4+"/24", "dev", "c0")
	add("client", "ip", "addr", "add", Client6+"/64", "dev", "c0", "nodad")
	add("client", "ip", "route", "add", "default", "via", "198.51.100.1")
	add("client", "ip", "-6", "route", "add", "default", "via", "2001:db8:c::1")
	add("router", "ip", "addr", "add", "198.51.100.1/24", "dev", "rc")
	add("router", "ip", "addr", "add", "2001:db8:c::1/64", "dev", "rc", "nodad")
	// The router hashes flows over the ECMP next hops by their 5-tuple.
	add("router", "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1")

	for _, lb := range LBNodes {
		rIf := "r" + lb
		if err := b.veth("router", rIf, lb, "l0", 1600); err != nil {
			return err
		}
		add("router", "ip", "addr", "add", RouterLBAddr4(lb)+"/29", "dev", rIf)
		add("router", "ip", "addr", "add", RouterLBAddr6(lb)+"/64", "dev", rIf, "nodad")
		add(lb, "ip", "addr", "add", LBAddr4(lb)+"/29", "dev", "l0")
		add(lb, "ip", "addr", "add", LBAddr6(lb)+"/64", "dev", "l0", "nodad")
		add(lb, "ip", "route", "add", "default", "via", RouterLBAddr4(lb))
		add(lb, "ip", "-6", "route", "add", "default", "via", RouterLBAddr6(lb))
	}
	for _, be := range BackendNodes {
		i, rIf := beIndex(be), "r"+be
		if err := b.veth("router", rIf, be, "b0", 1600); err != nil {
			return err
		}
		add("router", "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/28", 16*i+1), "dev", rIf)
		add("router", "ip", "addr", "add", fmt.Sprintf("2001:db8:b:%d::1/64", i), "dev", rIf, "nodad")
		add(be, "ip", "addr", "add", BackendAddr4(be)+"/28", "dev", "b0")
		add(be, "ip", "addr", "add", BackendAddr6(be)+"/64", "dev", "b0", "nodad")
		add(be, "ip", "addr", "add", VIP4+"/32", "dev", "lo")
		add(be, "ip", "addr", "add", VIP6+"/128", "dev", "lo")
		add(be, "ip", "route", "add", "default", "via", fmt.Sprintf("203.0.113.%d", 16*i+1))
		add(be, "ip", "-6", "route", "add", "default", "via", fmt.Sprintf("2001:db8:b:%d::1", i))
	}
	for _, n := range Nodes {
		for _, s := range steps[n] {
			if err := b.In(n, s...); err != nil {
				return err
			}
		}
	}

	// The router: BIRD, and an XDP program on its ends of the LB links, without which the
	// LB's XDP_TX is not delivered on a veth. 192.0.2.255 is no VIP: the
	// decap program passes everything.
	if err := b.startRouter(); err != nil {
		return err
	}
	decap, allow := cmp.Or(b.cfg.Decap, b.cfg.L4LB), "--allow-from="+strings.Join(LBSources(), ",")
	for _, lb := range LBNodes {
		if err := b.Start("router", "xdp-"+lb, nil, decap, "decap", "--iface", "r"+lb, "--vip", "192.0.2.255", allow, "--log-every", "1h"); err != nil {
			return err
		}
	}
	for _, be := range BackendNodes {
		if err := b.StartDecap(be); err != nil {
			return err
		}
		if err := b.StartBackend(be); err != nil {
			return err
		}
	}
	if err := os.WriteFile(b.path("mode"), []byte(b.cfg.Mode), 0o644); err != nil {
		return err
	}
	for _, lb := range LBNodes {
		// NAT data planes forward what they DNAT (XDP transmits by itself).
		if natMode(b.mode(lb)) {
			if err := b.In(lb, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(b.path(lb, "bpffs"), 0o700); err != nil {
			return err
		}
		if err := syscall.Mount("bpf", b.path(lb, "bpffs"), "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount the bpffs of %s: %w", lb, err)
		}
		if slices.Contains(b.cfg.External, lb) {
			continue
		}
		if err := b.StartLB(lb); err != nil {
			return err
		}
	}
	return nil
}

// StartBackend starts a backend's servers (http :80 and udp :53, answering with its name)
// and, where iperf3 is installed, an iperf3 server (:5201); those already running stay.
func (b *Bed) StartBackend(be string) error {
	if _, alive := b.PID(be, "serve"); !alive {
		if err := b.Start(be, "serve", nil, b.cfg.Self, "serve", "--name", be); err != nil {
			return err
		}
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		return nil
	}
	if _, alive := b.PID(be, "iperf3"); alive {
		return nil
	}
	return b.Start(be, "iperf3", nil, "iperf3", "--server", "--bind", "0.0.0.0")
}

// StartDecap starts a backend's decap program (`l4lb decap` on b0, both VIPs). The
// backends decapsulate only what the LB nodes encapsulate.
func (b *Bed) StartDecap(be string) error {
	decap, allow := cmp.Or(b.cfg.Decap, b.cfg.L4LB), "--allow-from="+strings.Join(LBSources(), ",")
	return b.Start(be, "decap", nil, decap, "decap", "--iface", "b0", "--vip", VIP4, "--vip", VIP6, allow, "--log-every", "1h")
}

// StopBackend stops a backend's servers (SIGTERM).
func (b *Bed) StopBackend(be string) error {
	var errs []error
	for _, p := range []string{"serve", "iperf3"} {
		if _, alive := b.PID(be, p); alive {
			errs = append(errs, b.Signal(be, p, syscall.SIGTERM, 5*time.Second))
		}
	}
	return errors.Join(errs...)
}

// LBBPFFS is the bpffs mount of an LB node (its l4lb pins under LBBPFFS/l4lb).
func (b *Bed) LBBPFFS(lb string) string { return b.path(lb, "bpffs") }

// StartLB starts l4lb on an LB node with its config.
func (b *Bed) StartLB(lb string) error {
	cfg, env := b.LBConfig(lb)
	return b.Start(lb, "l4lb", env, b.cfg.L4LB, "run", "--config", cfg)
}

// LBConfig is the config file an LB node's l4lb runs with and the L4LB_* environment
// that overrides it (bpffs, state file, data plane mode): what any l4lb command on that
// node (cleanup) needs too.
func (b *Bed) LBConfig(lb string) (string, []string) {
	cfg, env := b.cfg.LBConfig(lb)
	if m := b.mode(lb); m != "" {
		env = append(env, "L4LB_DATAPLANE="+m)
	}
	if b.mixesNFT() {
		// XDP nodes pick nftables' slots only with the scaled mapping (docs/architecture.md).
		env = append(env, "L4LB_XDP_SLOT_MAPPING=scaled")
	}
	return cfg, append(env,
		"L4LB_BPFFS="+b.path(lb, "bpffs", "l4lb"),
		"L4LB_STATE_FILE="+b.path(lb, "state.json"),
	)
}

// mode is the data plane mode an LB node runs: Config.NodeModes, Config.Mode, or what Up
// remembered ("": its config's).
func (b *Bed) mode(lb string) string {
	if m := b.cfg.NodeModes[lb]; m != "" {
		return m
	}
	if b.cfg.Mode != "" {
		return b.cfg.Mode
	}
	m, _ := os.ReadFile(b.path("mode"))
	return strings.TrimSpace(string(m))
}

// mixesNFT says whether the fleet runs nftables on some LB node and another mode on
// another: its XDP nodes must then map hashes to slots as nftables does.
func (b *Bed) mixesNFT() bool {
	modes := map[string]bool{}
	for _, lb := range LBNodes {
		modes[b.mode(lb)] = true
	}
	return modes["nftables"] && len(modes) > 1
}

func natMode(m string) bool { return m == "nftables" || m == "iptables" }

// Status describes each node: namespace present, processes running.
func (b *Bed) Status() (string, error) {
	have, err := b.existing()
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	if len(have) == 0 {
		return "testbed is down\n", nil
	}
	procs := map[string][]string{"router": {"bird"}}
	for _, lb := range LBNodes {
		procs[lb] = []string{"l4lb"}
	}
	for _, be := range BackendNodes {
		procs[be] = []string{"decap", "serve", "iperf3"}
	}
	for _, n := range Nodes {
		if !slices.Contains(have, n) {
			fmt.Fprintf(&sb, "%-16s missing\n", b.NS(n))
			continue
		}
		var ps []string
		for _, p := range procs[n] {
			state := "stopped"
			if pid, ok := b.PID(n, p); ok {
				state = fmt.Sprintf("pid %d", pid)
			}
			ps = append(ps, p+" "+state)
		}
		fmt.Fprintf(&sb, "%-16s up  %s\n", b.NS(n), strings.Join(ps, ", "))
	}
	return sb.String(), nil
}

// Eventually polls cond every 100ms until it is true or ctx ends.
func Eventually(ctx context.Context, cond func() bool) bool {
	for {
		if cond() {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Route returns the router's kernel route to a VIP as `ip route` prints it and the
// number of next hops in it (0: no route).
func (b *Bed) Route(ctx context.Context, vip string) (string, int, error) {
	a, err := netip.ParseAddr(vip)
	if err != nil {
		return "", 0, err
	}
	fam := "-4"
	if a.Is6() {
		fam = "-6"
	}
	out, err := b.Output(ctx, "router", "ip", fam, "route", "show", vip)
	if err != nil {
		return "", 0, err
	}
	out = strings.TrimSpace(out)
	if out == "" {
		return "", 0, nil
	}
	hops := strings.Count(out, "nexthop via")
	if hops == 0 {
		hops = 1
	}
	return out, hops, nil
}
