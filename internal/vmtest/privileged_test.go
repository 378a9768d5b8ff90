package vmtest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
)

// TestPrivilegedVMBoot boots the oldest supported kernel (Debian 12's 6.1) and runs a
// shell there: its output and exit status come back, and the host's root, /tmp, bpffs
// and the writable work directory are where the kernel suite expects them.
func TestPrivilegedVMBoot(t *testing.T) {
	testutil.RequireCommands(t, QEMU)
	k, err := FindKernel("6.1")
	if err != nil {
		t.Fatalf("%s=1 but %v", testutil.EnvPrivileged, err)
	}
	work := t.TempDir()
	script := `echo "hello from $(uname -r)"
test -w /tmp && test -d /sys/fs/bpf && mount | grep -q ' /sys/fs/bpf type bpf' || exit 3
echo made-in-vm > ` + work + `/out
modprobe veth && ip link add vmtest0 type veth peer name vmtest1 || exit 4
exit 7`
	start := time.Now()
	res, err := Run(context.Background(), Options{Kernel: k, Timeout: 3 * time.Minute}, work, Command{Args: []string{"/bin/sh", "-c", script}})
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, res.Console)
	}
	t.Logf("%s on %s: boot %s, total %s (wall %s)", k.Release, res.Accel, res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if res.ExitCode != 7 {
		t.Errorf("exit status %d, want 7; output:\n%s", res.ExitCode, res.Output)
	}
	if !strings.Contains(res.Output, "hello from "+k.Release) {
		t.Errorf("output lacks the greeting:\n%s", res.Output)
	}
	if out := readFile(t, work+"/out"); out != "made-in-vm\n" {
		t.Errorf("file written in the work directory: %q", out)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
