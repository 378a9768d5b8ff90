package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// QEMU is the emulator (Debian's qemu-system-x86).
const QEMU = "qemu-system-x86_64"

// EnvAccel forces the accelerator: kvm, tcg or auto (the default: KVM where it works).
const EnvAccel = "L4LB_VMTEST_ACCEL"

// Options say which kernel to boot and how big a machine to give it.
type Options struct {
	Kernel   Kernel
	CacheDir string        // initramfs cache; default CacheDir()
	MemoryMB int           // default 1536
	CPUs     int           // default 2
	Accel    string        // kvm, tcg or auto; default $L4LB_VMTEST_ACCEL, else auto
	Timeout  time.Duration // the whole boot and run; default 10 minutes
	Output   io.Writer     // if set, gets the console as it comes (boot lines included)
}

// Command is what runs inside the VM, as root, in a chroot of the host's root.
type Command struct {
	Args []string
	Env  []string // KEY=VALUE added to a minimal environment (PATH, HOME, TMPDIR)
	Dir  string   // working directory (a host path); default the work directory
}

// Result is the outcome of one boot.
type Result struct {
	Output   string        // what the command printed (stdout and stderr, in order)
	Console  string        // the whole serial console, boot lines included
	ExitCode int           // the command's exit status
	Boot     time.Duration // from starting QEMU to starting the command
	Total    time.Duration // from starting QEMU to its exit
	Accel    string        // kvm or tcg
}

// ErrNoResult means the VM stopped (or was stopped) before the command reported an exit
// status: a kernel panic, a timeout, a boot failure. Result.Console tells more.
var ErrNoResult = errors.New("vm ended without an exit status")

const (
	markRunning = "vmtest: running"
	markBooted  = "vmtest: kernel "
	markExit    = "vmtest: exit status "
)

// Run boots opts.Kernel under QEMU and runs cmd inside it. workDir (a host directory)
// is shared writable and mounted at the same path in the VM, so binaries and files put
// there are found under the same names, and files the command writes there come back.
// Everything else of the host is visible read-only; /tmp and /run are the VM's own.
func Run(ctx context.Context, opts Options, workDir string, cmd Command) (Result, error) {
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 1536
	}
	if opts.CPUs == 0 {
		opts.CPUs = 2
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Accel == "" {
		opts.Accel = os.Getenv(EnvAccel)
	}
	if len(cmd.Args) == 0 {
		return Result{}, errors.New("vmtest: no command")
	}
	if _, err := exec.LookPath(QEMU); err != nil {
		return Result{}, fmt.Errorf("vmtest: %s not found (install qemu-system-x86): %w", QEMU, err)
	}
	wd, err := filepath.Abs(workDir)
	if err != nil {
		return Result{}, err
	}
	if strings.ContainsAny(wd, " \t\n") {
		return Result{}, fmt.Errorf("vmtest: work directory %q: no spaces allowed (kernel command line)", wd)
	}
	initrd, err := Initramfs(opts.Kernel, opts.CacheDir)
	if err != nil {
		return Result{}, fmt.Errorf("vmtest: initramfs for %s: %w", opts.Kernel.Release, err)
	}
	if err := os.WriteFile(filepath.Join(wd, "run.sh"), []byte(runScript(wd, cmd)), 0o755); err != nil {
		return Result{}, err
	}

	accel := opts.Accel
	if accel == "" || accel == "auto" {
		accel = "tcg"
		if kvmUsable() {
			accel = "kvm"
		}
	}
	// /dev/kvm opens on some hosts where KVM then cannot run a guest: QEMU aborts at once
	// (this test machine) or the guest hangs. Either way the kernel never reaches /init,
	// and the same runs under TCG. A KVM guest reaches /init in a few seconds.
	var kvmBootLimit time.Duration
	if accel == "kvm" && opts.Accel != "kvm" {
		kvmBootLimit = time.Minute
	}
	res, err := boot(ctx, opts, accel, initrd, wd, kvmBootLimit)
	if err != nil && opts.Accel != "kvm" && accel == "kvm" && !strings.Contains(res.Console, markBooted) {
		fmt.Fprintf(outputOrDiscard(opts.Output), "vmtest: kvm does not run a guest here (%s), using tcg\n", firstLine(res.Console))
		res, err = boot(ctx, opts, "tcg", initrd, wd, 0)
	}
	return res, err
}

func outputOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// boot runs one VM. With bootLimit, QEMU is stopped if the kernel has not reached /init
// by then.
func boot(ctx context.Context, opts Options, accel, initrd, wd string, bootLimit time.Duration) (Result, error) {
	res := Result{Accel: accel, ExitCode: -1}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	args := []string{
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-machine", "pc", "-accel", accel,
		"-m", strconv.Itoa(opts.MemoryMB), "-smp", strconv.Itoa(opts.CPUs),
		"-kernel", opts.Kernel.Image, "-initrd", initrd,
		"-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init vmtest.dir=" + wd,
		"-serial", "stdio", "-monitor", "none",
		"-device", "virtio-rng-pci",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path=" + wd + ",mount_tag=vmtest,security_model=none,multidevs=remap",
	}
	if accel == "kvm" {
		args = append(args, "-cpu", "host")
	} else {
		args = append(args, "-cpu", "max")
	}
	q := exec.Command(QEMU, args...)
	q.Stdin = nil
	stdout, err := q.StdoutPipe()
	if err != nil {
		return res, err
	}
	q.Stderr = q.Stdout
	start := time.Now()
	if err := q.Start(); err != nil {
		return res, fmt.Errorf("vmtest: start qemu: %w", err)
	}
	// Stop QEMU (this process's own child, by PID) when the context ends.
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			_ = q.Process.Kill()
		case <-done:
		}
	}()

	var booted atomic.Bool
	if bootLimit > 0 {
		t := time.AfterFunc(bootLimit, func() {
			if !booted.Load() {
				_ = q.Process.Kill()
			}
		})
		defer t.Stop()
	}

	var console, output strings.Builder
	running := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		console.WriteString(line + "\n")
		if opts.Output != nil {
			fmt.Fprintln(opts.Output, line)
		}
		if strings.HasPrefix(line, markBooted) {
			booted.Store(true)
		}
		switch {
		case !running && line == markRunning:
			running = true
			res.Boot = time.Since(start)
		case strings.HasPrefix(line, markExit):
			if n, err := strconv.Atoi(strings.TrimPrefix(line, markExit)); err == nil {
				res.ExitCode = n
			}
			running = false
		case running:
			output.WriteString(line + "\n")
		}
	}
	werr := q.Wait()
	close(done)
	wg.Wait()
	res.Total = time.Since(start)
	res.Console = console.String()
	res.Output = output.String()
	if res.ExitCode < 0 {
		why := "qemu exited"
		if ctx.Err() != nil {
			why = fmt.Sprintf("timed out after %s", opts.Timeout)
		} else if werr != nil {
			why = fmt.Sprintf("qemu: %v", werr)
		}
		return res, fmt.Errorf("vmtest: %s on %s (%s): %w; last console lines:\n%s",
			opts.Kernel.Release, accel, why, ErrNoResult, tail(res.Console, 15))
	}
	return res, nil
}

// kvmUsable tells whether /dev/kvm can be opened for a VM.
func kvmUsable() bool {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// runScript is the work directory's run.sh: a clean environment, then the command.
func runScript(wd string, cmd Command) string {
	var b strings.Builder
	b.WriteString("export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
	b.WriteString("export HOME=/tmp TMPDIR=/tmp\n")
	for _, e := range cmd.Env {
		if k, v, ok := strings.Cut(e, "="); ok {
			fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(v))
		}
	}
	dir := cmd.Dir
	if dir == "" {
		dir = wd
	}
	fmt.Fprintf(&b, "cd %s || exit 126\n", shellQuote(dir))
	b.WriteString("exec 2>&1\n")
	quoted := make([]string, len(cmd.Args))
	for i, a := range cmd.Args {
		quoted[i] = shellQuote(a)
	}
	fmt.Fprintf(&b, "exec %s\n", strings.Join(quoted, " "))
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
