package main

import (
	"bytes"
	"strings"
	"testing"
)

func run(args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := newRootCmd(&out, &errb)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String() + errb.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run("version")
	if err != nil || !strings.HasPrefix(out, "l4lb ") {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func TestDecapRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"decap", "--iface", "eth0"}, "at least one --vip"},
		{[]string{"decap", "--iface", "eth0", "--vip", "203.0.113.300"}, `--vip "203.0.113.300"`},
		{[]string{"decap", "--vip", "203.0.113.10"}, "--iface is required"},
	} {
		_, err := run(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}
