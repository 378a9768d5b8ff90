package iptables

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// ErrNoForwarding: the node does not forward, so DNATed packets would not leave it.
var ErrNoForwarding = errors.New("the node does not forward packets")

// checkForwarding checks net.ipv4.ip_forward and net.ipv6.conf.all.forwarding.
func checkForwarding() error {
	var off []string
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			continue
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
