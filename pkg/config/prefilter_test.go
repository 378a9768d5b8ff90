package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPrefilterProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"valid", base + "    allow: [198.51.100.0/24, 192.0.2.7]\n    guard:\n      new_flow_rate: 1000\n      drop_rate: 5000\nprefilter:\n  deny: [203.0.113.96/29, 2001:db8:bad::/48]\n  deny_files: [/etc/l4lb/deny.txt]\n", nil},
		{"deny not a prefix", base + "prefilter:\n  deny: [198.51.100.0/33]\n", []string{`t.yaml:13: prefilter.deny[0]: "198.51.100.0/33" is not a prefix`}},
		{"deny with host bits", base + "prefilter:\n  deny: [198.51.100.1/24]\n", []string{`t.yaml:13: prefilter.deny[0]: "198.51.100.1/24" has host bits set (the prefix is 198.51.100.0/24)`}},
		{"relative deny file", base + "prefilter:\n  deny_files: [deny.txt]\n", []string{`t.yaml:13: prefilter.deny_files[0]: "deny.txt": want an absolute path`}},
		{"allow of the other family", base + "    allow: [2001:db8::/32]\n", []string{`t.yaml:12: vips[0].allow[0]: 2001:db8::/32 is not of the vip's address family`}},
		{"guard drop rate below rate", base + "    guard:\n      new_flow_rate: 1000\n      drop_rate: 10\n", []string{`t.yaml:14: vips[0].guard.drop_rate: 10: must be above new_flow_rate (1000)`}},
		{"empty guard", base + "    guard: {}\n", []string{`t.yaml:12: vips[0].guard: set new_flow_rate (and optionally drop_rate), or leave guard out`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml), noEnv)
			var got []string
			if err != nil {
				for _, l := range strings.Split(err.Error(), "\n") {
					if l = strings.TrimSpace(l); l != "" {
						got = append(got, l)
					}
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadPrefixes(t *testing.T) {
	got, err := ReadPrefixes("deny.txt", strings.NewReader("# spammers\n198.51.100.0/28\n\n2001:db8::1 # one host\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "198.51.100.0/28" || got[1].String() != "2001:db8::1/128" {
		t.Errorf("got %v", got)
	}
	if _, err := ReadPrefixes("deny.txt", strings.NewReader("198.51.100.0/28\nnope\n")); err == nil || !strings.Contains(err.Error(), "deny.txt:2:") {
		t.Errorf("error %v, want one naming deny.txt:2", err)
	}
}
