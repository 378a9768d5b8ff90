package main

import (
	"strings"
	"testing"

	"github.com/l4lb/l4lb/pkg/daemon"
)

// TestStatusShowsModeReason: `l4lb status` says which data plane runs and why.
func TestStatusShowsModeReason(t *testing.T) {
	addr, _ := fakeAdmin(t)
	out, err := run("status", "--admin", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"mode xdp,", "mode chosen: auto: the xdp program loads on this kernel\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// TestStatusNextHops: with interfaces that have next hops of their own, status shows each
// interface's, not only the default route's.
func TestStatusNextHops(t *testing.T) {
	for _, c := range []struct {
		v    daemon.View
		want string
	}{
		{daemon.View{NextHop: "02:00:00:00:00:01"}, "02:00:00:00:00:01"},
		{daemon.View{NextHop: "02:00:00:00:00:01", NextHops: map[string]string{"eth1": "02:00:00:00:00:03", "eth0": "02:00:00:00:00:02"}},
			"eth0 02:00:00:00:00:02, eth1 02:00:00:00:00:03"},
	} {
		if got := nextHops(c.v); got != c.want {
			t.Errorf("nextHops(%+v) = %q, want %q", c.v, got, c.want)
		}
	}
}
