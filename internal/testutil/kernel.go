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

// KernelTunnelBackend makes ns a backend that decapsulates with the kernel's own tunnel
// drivers, with the commands the README gives for it: one external (collect-metadata)
// ipip device for IPIP and one ip6tnl device in mode any for ip6ip6 and 4in6, and no
// reverse-path filter on what they decapsulate. (Loading ipip or ip6_tunnel creates the
// fallback devices tunl0 and ip6tnl0 in every namespace, so the names must differ;
// ip6tnl0 takes ip6ip6 only.)
func KernelTunnelBackend(tb testing.TB, ns *NetNS) {
	tb.Helper()
	ns.IPBatch(tb,
		"link add name ipip-lb type ipip external",
		"link set ipip-lb up",
		"link add name ip6tnl-lb type ip6tnl external mode any",
		"link set ip6tnl-lb up")
	ns.Sysctl(tb, "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.ipip-lb.rp_filter=0", "net.ipv4.conf.ip6tnl-lb.rp_filter=0")
}
