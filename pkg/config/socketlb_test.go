package config

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// socketOnly is an application host: dataplane socket, no interfaces, no encap prefixes.
const socketOnly = `dataplane: socket
vips:
  - name: web
    address: 203.0.113.10
    port: 80
    protocol: tcp
    backends:
      - address: 198.51.100.11
      - address: 2001:db8:b::11
`

func TestSocketLBValid(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(*Config) bool
	}{
		{"socket data plane needs no interface nor encap", socketOnly, func(c *Config) bool {
			return c.SocketLBOn() && c.SocketLB.Cgroup == "" && c.SocketLB.SampleEvery == 1
		}},
		{"beside xdp", base + "dataplane: xdp\nsocket_lb:\n  enabled: true\n  cgroup: /sys/fs/cgroup/apps\n  sample_every: 0\n", func(c *Config) bool {
			return c.SocketLBOn() && c.Dataplane == "xdp" && c.SocketLB.Cgroup == "/sys/fs/cgroup/apps" && c.SocketLB.SampleEvery == 0
		}},
		{"beside auto", base + "socket_lb:\n  enabled: true\n", func(c *Config) bool {
			return c.SocketLBOn() && c.Dataplane == "auto"
		}},
		{"off by default", base, func(c *Config) bool { return !c.SocketLBOn() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(tc.yaml), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected parse: %+v", c.SocketLB)
			}
		})
	}
}

func TestSocketLBProblems(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"socket with interfaces", "interfaces: [eth0]\n" + socketOnly,
			[]string{"t.yaml:1: interfaces: dataplane socket attaches to a cgroup, not to interfaces: leave interfaces empty"}},
		{"relative cgroup", socketOnly + "socket_lb:\n  cgroup: sys/fs/cgroup\n",
			[]string{`t.yaml:11: socket_lb.cgroup: "sys/fs/cgroup": want a clean absolute path to a cgroup v2 directory`}},
		{"unclean cgroup", socketOnly + "socket_lb:\n  cgroup: /sys/fs/cgroup/../x\n",
			[]string{`t.yaml:11: socket_lb.cgroup: "/sys/fs/cgroup/../x": want a clean absolute path to a cgroup v2 directory`}},
		{"beside a NAT data plane", base + "dataplane: nftables\nsocket_lb:\n  enabled: true\n",
			[]string{`t.yaml:14: socket_lb.enabled: needs the xdp maps: dataplane auto, xdp or socket, not "nftables"`}},
		{"unknown key", socketOnly + "socket_lb:\n  cgroups: /x\n", []string{"t.yaml:11: socket_lb.cgroups: unknown key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tc.yaml), noEnv)
			var ps Problems
			if !errors.As(err, &ps) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v, want Problems", err)
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
