package vmtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A SuitePackage is a Go test package the kernel suite runs inside the VM.
type SuitePackage struct {
	Name    string   // short name in reports: "xdp", "daemon"
	Pkg     string   // import path
	Testdir string   // directory (relative to the module root) whose testdata the tests read; "" if none
	Args    []string // extra test binary flags
	Env     []string // extra environment; {{work}} is replaced by the work directory
	// Modules are loaded (modprobe, with their dependencies) before the package runs.
	Modules []string
	// Prepare are commands BuildSuite runs on the host, in the module root, after the
	// build ({{work}} is replaced by the work directory): files the tests read.
	Prepare [][]string
}

// KernelSuite is what `make test-kernels` runs on each kernel: the packet table, the decap
// table, the fuzz corpus replay, the pinning and end-to-end XDP tests (all of
// pkg/lb/xdp, with XDP towards the kernel's own tunnel devices), the decap program over a
// veth (pkg/decap), the daemon test, which runs the real l4lb binary in namespaces, the
// socket LB tests (cgroup hooks over the XDP maps), the IPVS data plane's tests (this
// machine's kernel has no IPVS) and the package's IPVS data plane under its systemd unit.
var KernelSuite = []SuitePackage{
	// The DIR-24-8 expansion tests are pure Go: the host's run covers them.
	{Name: "xdp", Pkg: "./pkg/lb/xdp", Testdir: "pkg/lb/xdp", Modules: []string{"ipip", "ip6_tunnel"}, Args: []string{"-test.skip", "^TestDeny4Dir(Expansion|OrderIndependent)$"}},
	{Name: "decap", Pkg: "./pkg/decap"},
	// TestReloadKeysDoc compares docs/operations.md with the code: the VM has the test
	// binary, not the tree (and the doc does not depend on the kernel).
	{Name: "daemon", Pkg: "./pkg/daemon", Env: []string{"L4LB_BINARY={{work}}/l4lb"}, Args: []string{"-test.skip", "^TestReloadKeysDoc$"}},
	{Name: "socklb", Pkg: "./pkg/lb/socklb"},
	// IPVS end to end (tunnel and masq, through the controller and through l4lb run).
	{Name: "ipvs", Pkg: "./pkg/lb/ipvs", Modules: IPVSModules, Env: []string{"L4LB_BINARY={{work}}/l4lb"}},
	// The package's IPVS data plane under the unit, in a systemd container (the host runs
	// the other data planes so): the .deb, the binaries and lb1's config come from the
	// host, the Debian root from the host's cache (the host's make test makes it).
	{Name: "systemd", Pkg: "./packaging", Modules: IPVSModules,
		Args: []string{"-test.run", "^TestPrivilegedSystemdIPVS$"},
		Env: []string{"L4LB_DEB={{work}}/l4lb.deb", "L4LB_BINARY={{work}}/l4lb", "L4LB_TESTBED_BINARY={{work}}/testbed",
			"XDG_CACHE_HOME=" + hostCacheDir()},
		Prepare: [][]string{
			{"make", "package"},
			{"sh", "-c", `cp bin/l4lb_*_amd64.deb "$1/l4lb.deb" && mkdir -p "$1/conf" && cp -r conf/testbed "$1/conf/"`, "sh", "{{work}}"},
			{"go", "build", "-o", "{{work}}/testbed", "./testbed/cmd/testbed"},
		}},
}

// hostCacheDir is the host user's cache directory, where the packaging tests keep their
// Debian roots.
func hostCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return d
	}
	return os.TempDir()
}

// IPVSModules are the modules the IPVS data plane and kernel-tunnel backends need: IPVS
// with its Maglev scheduler, the IPIP and ip6ip6 / 4in6 tunnel drivers, and dummy for the
// VIP device.
var IPVSModules = []string{"ip_vs", "ip_vs_mh", "ipip", "ip6_tunnel", "dummy"}

// Suite is a built kernel suite: test binaries and the l4lb binary in a work directory.
type Suite struct {
	Work     string
	Packages []SuitePackage
}

// BuildSuite compiles the packages' test binaries and bin/l4lb into work (on the host:
// the VM has no toolchain to spare) and copies the testdata they read.
func BuildSuite(ctx context.Context, moduleRoot, work string, pkgs []SuitePackage) (*Suite, error) {
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	build := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = moduleRoot
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := build("build", "-o", filepath.Join(work, "l4lb"), "./cmd/l4lb"); err != nil {
		return nil, err
	}
	for _, p := range pkgs {
		if err := build("test", "-c", "-o", filepath.Join(work, p.Name+".test"), p.Pkg); err != nil {
			return nil, err
		}
		dir := filepath.Join(work, p.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		for _, c := range p.Prepare {
			args := make([]string, len(c))
			for i, a := range c {
				args[i] = strings.ReplaceAll(a, "{{work}}", work)
			}
			cmd := exec.CommandContext(ctx, args[0], args[1:]...)
			cmd.Dir = moduleRoot
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
			}
		}
		if p.Testdir != "" {
			src := filepath.Join(moduleRoot, p.Testdir, "testdata")
			if _, err := os.Stat(src); err == nil {
				if out, err := exec.CommandContext(ctx, "cp", "-r", src, dir).CombinedOutput(); err != nil {
					return nil, fmt.Errorf("copy %s: %w: %s", src, err, out)
				}
			}
		}
	}
	return &Suite{Work: work, Packages: pkgs}, nil
}

// PackageResult is one test binary's outcome on one kernel.
type PackageResult struct {
	Name                    string
	ExitCode                int
	Passed, Failed, Skipped int
	FailedTests             []string
	Duration                time.Duration
	Log                     string // path of the full -test.v output (on the host)
}

// KernelResult is the suite's outcome on one kernel.
type KernelResult struct {
	Kernel   Kernel
	Packages []PackageResult
	Boot     time.Duration // QEMU start to the first test
	Total    time.Duration // QEMU start to its exit
	Accel    string
	Err      error // the VM itself failed (no result)
}

// OK tells whether every package passed.
func (r KernelResult) OK() bool {
	if r.Err != nil || len(r.Packages) == 0 {
		return false
	}
	for _, p := range r.Packages {
		if p.ExitCode != 0 || p.Failed > 0 {
			return false
		}
	}
	return true
}

// Run boots k and runs every package of the suite in one boot. Logs go to
// work/RELEASE/NAME.log; console shows progress if set.
func (s *Suite) Run(ctx context.Context, opts Options, console io.Writer) KernelResult {
	k := opts.Kernel
	res := KernelResult{Kernel: k}
	logDir := filepath.Join(s.Work, k.Release)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		res.Err = err
		return res
	}
	script := s.script(logDir)
	if err := os.WriteFile(filepath.Join(s.Work, "suite.sh"), []byte(script), 0o755); err != nil {
		res.Err = err
		return res
	}
	tw := &timedWriter{out: console}
	opts.Output = tw
	r, err := Run(ctx, opts, s.Work, Command{Args: []string{"/bin/sh", filepath.Join(s.Work, "suite.sh")}})
	res.Boot, res.Total, res.Accel, res.Err = r.Boot, r.Total, r.Accel, err
	for _, p := range s.Packages {
		pr := PackageResult{Name: p.Name, ExitCode: -1, Log: filepath.Join(logDir, p.Name+".log")}
		if code, ok := tw.status(p.Name); ok {
			pr.ExitCode = code
			pr.Duration = tw.duration(p.Name)
		}
		if b, err := os.ReadFile(pr.Log); err == nil {
			pr.Passed, pr.Failed, pr.Skipped, pr.FailedTests = countTests(string(b))
		}
		res.Packages = append(res.Packages, pr)
	}
	return res
}

// script runs each test binary in turn, its output to a log in the shared work
// directory, and marks start and end on the console.
func (s *Suite) script(logDir string) string {
	var b strings.Builder
	b.WriteString("modprobe veth\n")
	for _, p := range s.Packages {
		if len(p.Modules) > 0 {
			fmt.Fprintf(&b, "modprobe -a %s || echo 'suite: modprobe %s failed'\n", strings.Join(p.Modules, " "), strings.Join(p.Modules, " "))
		}
		// L4LB_VMTEST: tests that need a kernel feature this host lacks (IPVS, ipip) fail
		// instead of skipping when it is missing here.
		env := []string{"L4LB_PRIVILEGED_TESTS=1", "L4LB_VMTEST=1"}
		for _, e := range p.Env {
			env = append(env, strings.ReplaceAll(e, "{{work}}", s.Work))
		}
		// -test.short: tests that size their load (a million deny prefixes, thousands of
		// probe packets) take the small size under TCG; the host runs the full one.
		args := append([]string{filepath.Join(s.Work, p.Name+".test"), "-test.v", "-test.count=1", "-test.timeout=8m", "-test.short"}, p.Args...)
		quoted := make([]string, len(args))
		for i, a := range args {
			quoted[i] = shellQuote(a)
		}
		fmt.Fprintf(&b, "echo 'suite: start %s'\n", p.Name)
		fmt.Fprintf(&b, "(cd %s && env %s %s) > %s 2>&1\n", shellQuote(filepath.Join(s.Work, p.Name)),
			strings.Join(env, " "), strings.Join(quoted, " "), shellQuote(filepath.Join(logDir, p.Name+".log")))
		fmt.Fprintf(&b, "echo \"suite: end %s $?\"\n", p.Name)
	}
	return b.String()
}

// timedWriter passes console lines on and notes when each package started and ended.
type timedWriter struct {
	out   io.Writer
	mu    sync.Mutex
	buf   []byte
	start map[string]time.Time
	end   map[string]time.Time
	code  map[string]int
}

var suiteMark = regexp.MustCompile(`^suite: (start|end) (\S+)(?: (\d+))?$`)

func (w *timedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.out != nil {
		if _, err := w.out.Write(p); err != nil {
			return 0, err
		}
	}
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		m := suiteMark.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if w.start == nil {
			w.start, w.end, w.code = map[string]time.Time{}, map[string]time.Time{}, map[string]int{}
		}
		if m[1] == "start" {
			w.start[m[2]] = time.Now()
		} else {
			w.end[m[2]] = time.Now()
			w.code[m[2]], _ = strconv.Atoi(m[3])
		}
	}
	return len(p), nil
}

func (w *timedWriter) status(name string) (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.code[name]
	return c, ok
}

func (w *timedWriter) duration(name string) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.end[name].Sub(w.start[name])
}

var topLevelResult = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+)`)

// countTests counts the top-level tests of a -test.v log (subtests are indented).
func countTests(log string) (pass, fail, skip int, failed []string) {
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		m := topLevelResult.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		switch m[1] {
		case "PASS":
			pass++
		case "FAIL":
			fail++
			failed = append(failed, m[2])
		case "SKIP":
			skip++
		}
	}
	return pass, fail, skip, failed
}
