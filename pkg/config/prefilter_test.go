package config

import (
	"net/netip"
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

// A prefilter.deny entry that covers a BGP peer or a backend is valid, and a warning
// naming what it covers; peers count only with BGP enabled.
func TestDenyCoversWarnings(t *testing.T) {
	const peerBackend = "prefilter.deny[1]: 192.0.2.0/24 covers bgp peer 192.0.2.1: the prefilter drops their packets (a peer's BGP session, a backend's health-check answers)"
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"covers nothing", base + "prefilter:\n  deny: [203.0.113.96/29, 2001:db8:bad::/48]\n", nil},
		{"a backend", base + "prefilter:\n  deny: [198.51.100.0/25]\n", []string{
			"t.yaml:13: prefilter.deny[0]: 198.51.100.0/25 covers backend 198.51.100.11 (vip web): the prefilter drops their packets (a peer's BGP session, a backend's health-check answers)"}},
		{"a backend's address", base + "prefilter:\n  deny: [198.51.100.11]\n", []string{
			"t.yaml:13: prefilter.deny[0]: 198.51.100.11/32 covers backend 198.51.100.11 (vip web): the prefilter drops their packets (a peer's BGP session, a backend's health-check answers)"}},
		{"a peer", base + bgpOn + "prefilter:\n  deny: [203.0.113.96/29, 192.0.2.0/24]\n", []string{"t.yaml:20: " + peerBackend}},
		{"a peer, bgp off", base + strings.Replace(bgpOn, "enabled: true", "enabled: false", 1) + "prefilter:\n  deny: [203.0.113.96/29, 192.0.2.0/24]\n", nil},
		{"everything", base + bgpOn + "prefilter:\n  deny: [0.0.0.0/0]\n", []string{
			"t.yaml:20: prefilter.deny[0]: 0.0.0.0/0 covers bgp peer 192.0.2.1, backend 198.51.100.11 (vip web): the prefilter drops their packets (a peer's BGP session, a backend's health-check answers)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ws, err := parse("t.yaml", []byte(tc.yaml), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range ws {
				got = append(got, w.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}

// DenyCovers checks each address against every prefix length, not each prefix against
// each address: what a prefix covers, in the order of the addresses.
func TestDenyCovers(t *testing.T) {
	addrs := []Protected{
		{Addr: netip.MustParseAddr("192.0.2.1"), What: "peer"},
		{Addr: netip.MustParseAddr("2001:db8::7"), What: "backend6"},
		{Addr: netip.MustParseAddr("192.0.2.200"), What: "backend"},
	}
	ps := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("192.0.2.0/25"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("::/0"),
	}
	got := DenyCovers(ps, addrs)
	want := map[netip.Prefix][]string{
		netip.MustParsePrefix("192.0.2.0/24"):  {"peer", "backend"},
		netip.MustParsePrefix("192.0.2.0/25"):  {"peer"},
		netip.MustParsePrefix("2001:db8::/32"): {"backend6"},
		netip.MustParsePrefix("::/0"):          {"backend6"},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
