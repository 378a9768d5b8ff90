package testutil

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

func TestPrivilegedNetNS(t *testing.T) {
	RequireCommands(t, "ip", "ethtool", "ping")
	var names []string
	t.Run("pair", func(t *testing.T) {
		a, b := NewNetNS(t, "a"), NewNetNS(t, "b")
		names = []string{a.Name(), b.Name()}
		Veth(t, a, "va", b, "vb")
		a.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "va")
		b.Run(t, "ip", "addr", "add", "192.0.2.2/24", "dev", "vb")
		a.Run(t, "ping", "-c", "1", "-W", "2", "192.0.2.2")

		// A socket made inside Do lives in the namespace.
		var ln net.Listener
		if err := b.Do(func() error {
			var err error
			ln, err = net.Listen("tcp4", "192.0.2.2:0")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		if err := a.Do(func() error {
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			t.Fatalf("connect across the veth: %v", err)
		}
		// The root namespace has no such address: the test thread is back where it was.
		if _, err := net.Dial("tcp4", ln.Addr().String()); err == nil {
			t.Fatal("dial from the root namespace reached the namespace's listener")
		}
	})
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s still exists after cleanup", n)
		}
	}
}
