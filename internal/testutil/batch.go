package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// IPBatch runs `ip` commands (without the leading "ip") in the namespace in one process
// (`ip -batch`): in a VM under emulation each process start costs about a second, so a
// topology is set up with a few of these rather than dozens of `ip` calls.
func (ns *NetNS) IPBatch(tb testing.TB, cmds ...string) {
	tb.Helper()
	cmd := exec.Command("ip", "-n", ns.name, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("in %s: ip -batch: %v: %s\ncommands:\n%s", ns.name, err, out, strings.Join(cmds, "\n"))
	}
}

// Sysctl sets sysctls (name=value, dotted names) in the namespace without starting a
// process: /proc/sys/net is the writing thread's namespace's.
func (ns *NetNS) Sysctl(tb testing.TB, settings ...string) {
	tb.Helper()
	err := ns.Do(func() error {
		for _, s := range settings {
			k, v, ok := strings.Cut(s, "=")
			if !ok {
				return fmt.Errorf("sysctl %q: want name=value", s)
			}
			if err := os.WriteFile("/proc/sys/"+strings.ReplaceAll(k, ".", "/"), []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s: %w", s, err)
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("in %s: %v", ns.name, err)
	}
}
