package testutil

import (
	"os"
	"testing"
)

// EnvInVM is set (to 1) by the kernel suite (internal/vmtest) in the stock kernels it
// boots, whose modules include IPVS and the ipip / ip6_tunnel drivers.
const EnvInVM = "L4LB_VMTEST"

// RequireKernelFeature is RequirePrivileged plus a kernel feature this machine's kernel
// may lack (IPVS, the ipip driver). Without it the test skips, naming the VM target that
// runs it, unless it runs in the kernel suite's VM, where the feature is expected and
// its absence fails the test.
func RequireKernelFeature(tb testing.TB, feature string, have bool, why string) {
	tb.Helper()
	RequirePrivileged(tb)
	if have {
		return
	}
	if os.Getenv(EnvInVM) == "1" {
		tb.Fatalf("%s=1 (in the kernel suite's VM) but %s: %s", EnvInVM, feature, why)
	}
	tb.Skipf("%s in this kernel (%s): `make test-kernels` runs this test on Debian's 6.1 and 6.12 under QEMU (`make test` on 6.1)", feature, why)
}
