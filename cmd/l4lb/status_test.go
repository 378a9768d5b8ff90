package main

import (
	"strings"
	"testing"
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
