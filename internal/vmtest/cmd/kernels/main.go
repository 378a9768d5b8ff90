// Command kernels runs the kernel suite (internal/vmtest.KernelSuite) on stock
// distribution kernels under QEMU: one line per kernel, then a summary table. It is
// `make test-kernels`, and `make test` runs it on the oldest kernel.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/l4lb/l4lb/internal/vmtest"
)

// envPrivileged is the privileged-test gate of internal/testutil (not imported: it pulls
// package testing into a command).
const envPrivileged = "L4LB_PRIVILEGED_TESTS"

func main() {
	kernels := flag.String("kernels", "6.1,6.12", "kernel series to run, comma-separated (found in /boot by series)")
	verbose := flag.Bool("v", false, "show the VM console as it runs")
	keep := flag.Bool("keep", false, "keep the work directory (binaries and logs) even when everything passed")
	timeout := flag.Duration("timeout", 10*time.Minute, "limit per kernel (boot and tests)")
	only := flag.String("packages", "", "run only these suite packages (comma-separated names, e.g. ipvs,xdp); default all")
	flag.Parse()
	os.Exit(run(*kernels, *only, *verbose, *keep, *timeout))
}

// selectPackages returns the suite's packages named in only (all if only is empty).
func selectPackages(only string) ([]vmtest.SuitePackage, error) {
	if only == "" {
		return vmtest.KernelSuite, nil
	}
	var out []vmtest.SuitePackage
	for _, n := range strings.Split(only, ",") {
		found := false
		for _, p := range vmtest.KernelSuite {
			if p.Name == strings.TrimSpace(n) {
				out, found = append(out, p), true
			}
		}
		if !found {
			return nil, fmt.Errorf("-packages: no suite package %q", n)
		}
	}
	return out, nil
}

func run(series, only string, verbose, keep bool, timeout time.Duration) int {
	if os.Getenv(envPrivileged) != "1" {
		fmt.Printf("kernels: skipped (privileged: set %s=1 and run as root to boot %s under QEMU)\n", envPrivileged, series)
		return 0
	}
	if os.Geteuid() != 0 {
		fmt.Printf("kernels: FAIL: %s=1 but not running as root\n", envPrivileged)
		return 1
	}
	if _, err := exec.LookPath(vmtest.QEMU); err != nil {
		fmt.Printf("kernels: FAIL: %s=1 but %s is missing (make deps installs qemu-system-x86)\n", envPrivileged, vmtest.QEMU)
		return 1
	}
	var ks []vmtest.Kernel
	for _, s := range strings.Split(series, ",") {
		k, err := vmtest.FindKernel(strings.TrimSpace(s))
		if err != nil {
			fmt.Printf("kernels: FAIL: %v\n", err)
			return 1
		}
		ks = append(ks, k)
	}
	root, err := moduleRoot()
	if err != nil {
		fmt.Printf("kernels: FAIL: %v\n", err)
		return 1
	}
	work, err := os.MkdirTemp("", "l4lb-kernels-")
	if err != nil {
		fmt.Printf("kernels: FAIL: %v\n", err)
		return 1
	}
	ctx := context.Background()
	t0 := time.Now()
	pkgs, err := selectPackages(only)
	if err != nil {
		fmt.Printf("kernels: FAIL: %v\n", err)
		return 1
	}
	suite, err := vmtest.BuildSuite(ctx, root, work, pkgs)
	if err != nil {
		fmt.Printf("kernels: FAIL: build the suite: %v\n", err)
		os.RemoveAll(work)
		return 1
	}
	fmt.Printf("kernels: built the suite in %.1fs (%s)\n", time.Since(t0).Seconds(), work)

	var results []vmtest.KernelResult
	for _, k := range ks {
		opts := vmtest.Options{Kernel: k, Timeout: timeout}
		var console io.Writer // nil: quiet
		if verbose {
			console = os.Stdout
		}
		r := suite.Run(ctx, opts, console)
		results = append(results, r)
		fmt.Println(line(r))
		if !r.OK() {
			explain(r)
		}
	}

	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "series\trelease\tresult")
	for _, p := range pkgs {
		fmt.Fprintf(tw, "\t%s", p.Name)
	}
	fmt.Fprintln(tw, "\tboot\ttests\ttotal\taccel")
	passed, failed := 0, 0
	for _, r := range results {
		res := "PASS"
		if r.OK() {
			passed++
		} else {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s", r.Kernel.Series, r.Kernel.Release, res)
		for _, p := range r.Packages {
			fmt.Fprintf(tw, "\t%s", counts(p))
		}
		fmt.Fprintf(tw, "\t%.1fs\t%.1fs\t%.1fs\t%s\n", r.Boot.Seconds(), (r.Total - r.Boot).Seconds(), r.Total.Seconds(), r.Accel)
	}
	tw.Flush()
	fmt.Printf("kernels: %d passed, %d failed\n", passed, failed)
	if failed > 0 || keep {
		fmt.Printf("kernels: binaries and logs kept in %s\n", work)
	} else {
		os.RemoveAll(work)
	}
	if failed > 0 {
		return 1
	}
	return 0
}

func line(r vmtest.KernelResult) string {
	res := "PASS"
	if !r.OK() {
		res = "FAIL"
	}
	var parts []string
	for _, p := range r.Packages {
		parts = append(parts, fmt.Sprintf("%s %s (%.1fs)", p.Name, counts(p), p.Duration.Seconds()))
	}
	return fmt.Sprintf("kernel %s (%s): %s: %s; boot %.1fs, total %.1fs (%s)",
		r.Kernel.Series, r.Kernel.Release, res, strings.Join(parts, ", "), r.Boot.Seconds(), r.Total.Seconds(), r.Accel)
}

func counts(p vmtest.PackageResult) string {
	if p.ExitCode < 0 {
		return "not run"
	}
	s := fmt.Sprintf("%d passed", p.Passed)
	if p.Failed > 0 {
		s += fmt.Sprintf(", %d failed", p.Failed)
	}
	if p.Skipped > 0 {
		s += fmt.Sprintf(", %d skipped", p.Skipped)
	}
	if p.ExitCode != 0 && p.Failed == 0 {
		s += fmt.Sprintf(", exit %d", p.ExitCode)
	}
	return s
}

// explain prints why a kernel failed: the VM error, or each failing package's failed
// tests and the end of its log.
func explain(r vmtest.KernelResult) {
	if r.Err != nil {
		fmt.Printf("  %v\n", r.Err)
	}
	for _, p := range r.Packages {
		if p.ExitCode == 0 && p.Failed == 0 {
			continue
		}
		fmt.Printf("  %s: failed %v; log %s; its end:\n", p.Name, p.FailedTests, p.Log)
		b, _ := os.ReadFile(p.Log)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		for _, l := range lines {
			fmt.Printf("    %s\n", l)
		}
	}
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the l4lb module")
	}
	return filepath.Dir(mod), nil
}
