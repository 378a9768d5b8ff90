package lb

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrNoForwarding: the node does not forward, so DNATed packets would not leave it.
var ErrNoForwarding = errors.New("the node does not forward packets")

// CheckForwarding checks net.ipv4.ip_forward and net.ipv6.conf.all.forwarding in the
// current network namespace and says which to set: the NAT data planes (nftables,
// iptables) need both.
func CheckForwarding() error {
	var off []string
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			continue // no IPv6 in this kernel: nothing to forward
		}
		if strings.TrimSpace(string(b)) == "0" {
			off = append(off, strings.ReplaceAll(k, "/", ".")+"=1")
		}
	}
	if len(off) > 0 {
		return fmt.Errorf("%w: set %s (sysctl -w) for NAT data planes", ErrNoForwarding, strings.Join(off, " "))
	}
	return nil
}
