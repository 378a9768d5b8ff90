package testutil

import (
	"strings"
	"testing"
)

func TestPrivilegedBatchAndSysctl(t *testing.T) {
	RequireCommands(t, "ip", "sysctl")
	ns := NewNetNS(t, "batch")
	ns.IPBatch(t, "link add d0 type veth peer name d1", "link set d0 up", "addr add 192.0.2.1/24 dev d0")
	ns.Sysctl(t, "net.ipv4.ip_forward=1", "net.ipv4.conf.d0.rp_filter=2")
	if out := ns.Run(t, "ip", "-4", "addr", "show", "d0"); !strings.Contains(out, "192.0.2.1/24") {
		t.Errorf("address missing: %s", out)
	}
	if out := ns.Run(t, "sysctl", "-n", "net.ipv4.ip_forward", "net.ipv4.conf.d0.rp_filter"); out != "1\n2\n" {
		t.Errorf("sysctls in the namespace: %q, want 1 and 2", out)
	}
}
