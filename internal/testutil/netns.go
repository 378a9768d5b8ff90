package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
)

// NetNS is a network namespace a test created; it is deleted when the test ends.
type NetNS struct {
	name string
	mu   sync.Mutex
	cmds []*exec.Cmd
}

// NewNetNS creates a namespace named l4lbt-ROLE-RANDOM with lo up, deleted (with the
// processes started in it) in tb's cleanup.
func NewNetNS(tb testing.TB, role string) *NetNS {
	tb.Helper()
	RequireCommands(tb, "ip")
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	ns := &NetNS{name: fmt.Sprintf("l4lbt-%s-%s", role, hex.EncodeToString(b[:]))}
	if out, err := exec.Command("ip", "netns", "add", ns.name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", ns.name, err, out)
	}
	tb.Cleanup(func() {
		ns.stopAll()
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			tb.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	ns.Run(tb, "ip", "link", "set", "lo", "up")
	return ns
}

// Name is the namespace's name, as `ip netns exec` takes it.
func (ns *NetNS) Name() string { return ns.name }

// Run runs a command in the namespace and fails tb with its output if it fails.
func (ns *NetNS) Run(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := ns.Output(args...)
	if err != nil {
		tb.Fatalf("in %s: %s: %v: %s", ns.name, strings.Join(args, " "), err, out)
	}
	return out
}

// Output runs a command in the namespace and returns its combined output.
func (ns *NetNS) Output(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Start starts a long-running command in the namespace; it is killed (by its own PID)
// when the test ends.
func (ns *NetNS) Start(tb testing.TB, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("in %s: start %s: %v", ns.name, strings.Join(args, " "), err)
	}
	ns.mu.Lock()
	ns.cmds = append(ns.cmds, cmd)
	ns.mu.Unlock()
	return cmd
}

func (ns *NetNS) stopAll() {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, c := range ns.cmds {
		if c.Process != nil && c.ProcessState == nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
	ns.cmds = nil
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn creates belong to the
// namespace and may be used from any goroutine afterwards.
func (ns *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns.name)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns.name, err)
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns.name, err)
			runtime.UnlockOSThread()
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine instead of running
			// other goroutines in the wrong namespace.
			errc <- fmt.Errorf("return from netns %s: %w (and fn: %v)", ns.name, err, ferr)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Veth connects two namespaces with a veth pair (aIf in a, bIf in b), both up, with tx
// checksum offload off: native XDP on a veth loses the sender's partial checksum, so
// TCP and UDP from a local socket would arrive with a bad checksum.
func Veth(tb testing.TB, a *NetNS, aIf string, b *NetNS, bIf string) {
	tb.Helper()
	RequireCommands(tb, "ethtool")
	a.Run(tb, "ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.name)
	for _, end := range []struct {
		ns *NetNS
		If string
	}{{a, aIf}, {b, bIf}} {
		end.ns.Run(tb, "ip", "link", "set", end.If, "up")
		end.ns.Run(tb, "ethtool", "-K", end.If, "tx", "off")
	}
}
