package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const base = `interfaces: [eth0]
encap:
  source4: 192.0.2.0/24
  source6: 2001:db8:e::/64
vips:
  - name: web
    address: 203.0.113.10
    port: 80
    protocol: tcp
    backends:
      - address: 198.51.100.11
`

// bgpOn is a valid bgp section to append to base; its last line is line 18.
const bgpOn = `bgp:
  enabled: true
  local_asn: 65001
  router_id: 192.0.2.2
  peers:
    - address: 192.0.2.1
      asn: 65000
`

func noEnv(string) (string, bool) { return "", false }

func TestExampleConfigIsValid(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "conf", "l4lb.yaml"))
	if err != nil {
		t.Fatalf("conf/l4lb.yaml: %v", err)
	}
	if len(c.VIPs) != 3 || c.VIPs[0].Health.Interval != 2*time.Second || *c.VIPs[0].Backends[2].Weight != 2 {
		t.Errorf("unexpected parse: %+v", c.VIPs)
	}
}

func TestDefaultsAndEnvironment(t *testing.T) {
	env := map[string]string{"L4LB_ADMIN_LISTEN": "127.0.0.1:9200", "L4LB_XDP_MTU": "1600"}
	c, err := Parse("t.yaml", []byte(base), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != "127.0.0.1:9200" || c.XDP.MTU != 1600 {
		t.Errorf("environment not applied: admin %q mtu %d", c.Admin.Listen, c.XDP.MTU)
	}
	if c.BPFFS != DefaultBPFFS || c.XDP.RingSize != 65537 || c.DrainDelay != DefaultDrainDelay || c.Dataplane != "auto" {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestProblemFromEnvironment(t *testing.T) {
	env := map[string]string{"L4LB_XDP_MTU": "100", "L4LB_DRAIN_DELAY": "soon"}
	_, err := Parse("t.yaml", []byte(base+"xdp:\n  mtu: 1500\n"), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	want := "t.yaml:1: drain_delay: time: invalid duration (set by L4LB_DRAIN_DELAY)\n" +
		"t.yaml:13: xdp.mtu: 100: want 576 to 65535 (set by L4LB_XDP_MTU)"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}

// TestProblems: each bad input gives exactly the listed problems, with their lines.
func TestProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"unknown key", base + "bogus: 1\n", []string{"t.yaml:12: bogus: unknown key"}},
		{"unknown nested key", strings.Replace(base, "    port: 80\n", "    port: 80\n    prot: 1\n", 1), []string{"t.yaml:9: vips[0].prot: unknown key"}},
		{"yaml syntax", "interfaces: [eth0\n", []string{"t.yaml:1: yaml: line 1: did not find expected ',' or ']'"}},
		{"no interfaces", strings.Replace(base, "interfaces: [eth0]\n", "", 1), []string{"t.yaml:1: interfaces: at least one interface is required"}},
		{"null interfaces", strings.Replace(base, "interfaces: [eth0]\n", "interfaces:\n", 1), []string{"t.yaml:1: interfaces: at least one interface is required"}},
		{"interfaces as a single value", strings.Replace(base, "interfaces: [eth0]\n", "interfaces: l0\n", 1), []string{`t.yaml:1: interfaces: "l0": want a list, e.g. [l0]`}},
		{"communities as a single value", base + "    communities: 65001:100\n", []string{`t.yaml:12: vips[0].communities: "65001:100": want a list, e.g. [65001:100]`}},
		{"vips as a mapping", "interfaces: [eth0]\nvips:\n  name: web\n", []string{"t.yaml:2: vips: want a list (- items), not a mapping"}},
		{"section as a single value", base + "xdp: 5\n", []string{`t.yaml:12: xdp: "5": want a mapping of keys`}},
		{"section as a list", base + "xdp: [1, 2]\n", []string{"t.yaml:12: xdp: want a mapping of keys, not a list"}},
		{"backend as a single value", base + "      - 198.51.100.12\n", []string{`t.yaml:12: vips[0].backends[1]: "198.51.100.12": want a mapping of keys`}},
		{"value as a list", base + "admin:\n  listen: [127.0.0.1:9100]\n", []string{"t.yaml:13: admin.listen: want a single value, not a list"}},
		{"value as a mapping", base + "drain_delay: {s: 5}\n", []string{"t.yaml:12: drain_delay: want a single value, not a mapping"}},
		{"top level a list", "- interfaces: [eth0]\n", []string{"t.yaml:1: want a mapping of keys at the top of the file, not a list"}},
		{"empty file", "", []string{"t.yaml:1: the file is empty: at least interfaces is required"}},
		{"only comments", "# nothing here\n\n", []string{"t.yaml:1: the file is empty: at least interfaces is required"}},
		{"null document", "~\n", []string{"t.yaml:1: the file is empty: at least interfaces is required"}},
		{"bgp without peers", base + "bgp:\n  enabled: true\n  local_asn: 1\n  router_id: 192.0.2.1\n", []string{"t.yaml:12: bgp.peers: at least one peer is required when bgp is enabled"}},
		{"bad dataplane", base + "dataplane: dpdk\n", []string{`t.yaml:12: dataplane: "dpdk": want auto, xdp, nftables, iptables, ipvs or socket`}},
		{"relative bpffs", base + "bpffs: fs/bpf\n", []string{`t.yaml:12: bpffs: "fs/bpf": want an absolute path`}},
		{"bad mac", base + "nexthop:\n  mac: zz\n", []string{`t.yaml:13: nexthop.mac: "zz" is not an Ethernet MAC address`}},
		{"bad prefix", strings.Replace(base, "192.0.2.0/24", "192.0.2.0/33", 1), []string{`t.yaml:3: encap.source4: "192.0.2.0/33" is not an ipv4 prefix`}},
		{"v6 prefix for v4", strings.Replace(base, "192.0.2.0/24", "2001:db8::/64", 1), []string{`t.yaml:3: encap.source4: "2001:db8::/64" is not an ipv4 prefix`}},
		{"ring size not prime", base + "xdp:\n  ring_size: 65536\n", []string{"t.yaml:13: xdp.ring_size: 65536: want a prime from 257 to 1048573 (default 65537)"}},
		{"ring size too small", base + "xdp:\n  ring_size: 251\n", []string{"t.yaml:13: xdp.ring_size: 251: want a prime from 257 to 1048573 (default 65537)"}},
		{"ring size a prime above the maximum", base + "xdp:\n  ring_size: 1048583\n", []string{"t.yaml:13: xdp.ring_size: 1048583: want a prime from 257 to 1048573 (default 65537)"}},
		{"ring size the largest uint32 prime", base + "xdp:\n  ring_size: 4294967291\n", []string{"t.yaml:13: xdp.ring_size: 4294967291: want a prime from 257 to 1048573 (default 65537)"}},
		{"vip ring size not prime", strings.Replace(base, "    port: 80\n", "    port: 80\n    ring_size: 4096\n", 1), []string{"t.yaml:9: vips[0].ring_size: 4096: want a prime from 257 to 1048573 (or leave it out for xdp.ring_size)"}},
		{"conntrack too small", base + "xdp:\n  conntrack_size: 1000\n", []string{"t.yaml:13: xdp.conntrack_size: 1000: want 1024 to 67108864 (the table is allocated at load time, about 16 bytes per entry)"}},
		{"conntrack too big", base + "xdp:\n  conntrack_size: 134217728\n", []string{"t.yaml:13: xdp.conntrack_size: 134217728: want 1024 to 67108864 (the table is allocated at load time, about 16 bytes per entry)"}},
		{"bad slot mapping", base + "xdp:\n  slot_mapping: mod\n", []string{`t.yaml:13: xdp.slot_mapping: "mod": want modulo or scaled`}},
		{"bad mtu", base + "xdp:\n  mtu: 100\n", []string{"t.yaml:13: xdp.mtu: 100: want 576 to 65535"}},
		{"bad admin listen", base + "admin:\n  listen: nope\n", []string{`t.yaml:13: admin.listen: "nope": want host:port`}},
		{"admin port too big", base + "admin:\n  listen: 127.0.0.1:99999\n", []string{`t.yaml:13: admin.listen: "127.0.0.1:99999": want a port from 1 to 65535`}},
		{"admin port 0", base + "admin:\n  listen: 127.0.0.1:0\n", []string{`t.yaml:13: admin.listen: "127.0.0.1:0": want a port from 1 to 65535`}},
		{"admin port by name", base + "admin:\n  listen: 127.0.0.1:http\n", []string{`t.yaml:13: admin.listen: "127.0.0.1:http": want a port from 1 to 65535`}},
		{"duplicate vip", base + "  - name: web2\n    address: 203.0.113.10\n    port: 80\n    protocol: tcp\n    backends:\n      - address: 198.51.100.12\n",
			[]string{"t.yaml:12: vips[1]: duplicate vip 203.0.113.10:80/tcp (also vips[0])"}},
		{"duplicate name", base + "  - name: web\n    address: 203.0.113.11\n    protocol: tcp\n    backends:\n      - address: 198.51.100.12\n",
			[]string{`t.yaml:12: vips[1].name: "web" already names vips[0]`}},
		{"missing name", strings.Replace(base, "  - name: web\n    address", "  - address", 1), []string{"t.yaml:6: vips[0].name: required"}},
		{"bad vip address", strings.Replace(base, "203.0.113.10", "203.0.113.300", 1), []string{`t.yaml:7: vips[0].address: "203.0.113.300" is not an IP address`}},
		{"bad protocol", strings.Replace(base, "protocol: tcp", "protocol: sctp", 1), []string{`t.yaml:9: vips[0].protocol: "sctp": want tcp or udp`}},
		{"port out of range", strings.Replace(base, "port: 80", "port: 70000", 1), []string{"t.yaml:8: vips[0].port: 70000: want 0 (any port) to 65535"}},
		{"no backends", strings.Replace(base, "    backends:\n      - address: 198.51.100.11\n", "", 1), []string{"t.yaml:6: vips[0].backends: at least one backend is required"}},
		{"bad weight", base + "        weight: -1\n", []string{"t.yaml:12: vips[0].backends[0].weight: -1: want 0 (drained) to 65536"}},
		{"weight not a number", base + "        weight: heavy\n", []string{`t.yaml:12: vips[0].backends[0].weight: cannot parse value as 'int64': strconv.ParseInt: invalid syntax`}},
		{"duplicate backend", base + "      - address: 198.51.100.11\n", []string{"t.yaml:12: vips[0].backends[1].address: 198.51.100.11 already listed as backends[0]"}},
		{"v4 backend for v6 vip", strings.Replace(base, "203.0.113.10", "2001:db8:f::10", 1),
			[]string{"t.yaml:11: vips[0].backends[0].address: ipv4 backend 198.51.100.11 cannot carry ipv6 vip 2001:db8:f::10 (no 6in4 encapsulation)"}},
		{"backend family without source prefix", strings.Replace(base, "  source6: 2001:db8:e::/64\n", "", 1) + "      - address: 2001:db8:b::1\n",
			[]string{"t.yaml:11: vips[0].backends[1].address: ipv6 backend needs encap.source6"}},
		{"bad health", base + "    health:\n      type: icmp\n      interval: 1s\n      timeout: 2s\n",
			[]string{`t.yaml:13: vips[0].health.type: "icmp": want tcp, http, https or udp`, "t.yaml:15: vips[0].health.timeout: 2s is longer than the interval 1s"}},
		{"bad health path", base + "    health:\n      type: tcp\n      via: hop\n",
			[]string{`t.yaml:14: vips[0].health.via: "hop": want direct (to the backend's address) or tunnel (to the vip, encapsulated as forwarded traffic)`}},
		{"tls fields on a tcp check", base + "    health:\n      type: tcp\n      server_name: web.example\n      ca_file: /etc/ca.pem\n",
			[]string{"t.yaml:14: vips[0].health.server_name: only an https check has a server name (type is tcp)",
				"t.yaml:15: vips[0].health.ca_file: only an https check verifies a certificate (type is tcp)"}},
		{"a backend's server name on an http check", strings.Replace(base, "      - address: 198.51.100.11\n", "      - address: 198.51.100.11\n        health:\n          server_name: web.example\n", 1) + "    health:\n      type: http\n",
			[]string{"t.yaml:13: vips[0].backends[0].health.server_name: only an https check has a server name (type is http)"}},
		{"udp health without payload", base + "    health:\n      type: udp\n", []string{"t.yaml:12: vips[0].health.payload: a udp check needs a payload to send"}},
		{"bad bgp", base + "bgp:\n  enabled: true\n  router_id: 2001:db8::1\n  peers:\n    - address: x\n      hold_time: 1s\n",
			[]string{"t.yaml:12: bgp.local_asn: required when bgp is enabled", `t.yaml:14: bgp.router_id: "2001:db8::1": want a non-zero ipv4 address`,
				`t.yaml:16: bgp.peers[0].address: "x" is not an IP address`, "t.yaml:16: bgp.peers[0].asn: required", "t.yaml:17: bgp.peers[0].hold_time: 1s: want 0 or at least 3s"}},
		{"multicast vip", strings.Replace(base, "203.0.113.10", "224.0.0.1", 1), []string{"t.yaml:7: vips[0].address: 224.0.0.1 is a multicast address: a vip must be a unicast address routed to this node"}},
		{"ipv6 multicast vip", strings.Replace(strings.Replace(base, "203.0.113.10", "ff02::1", 1), "198.51.100.11", "2001:db8:b::11", 1),
			[]string{"t.yaml:7: vips[0].address: ff02::1 is a multicast address: a vip must be a unicast address routed to this node"}},
		{"unspecified vip", strings.Replace(base, "203.0.113.10", "0.0.0.0", 1), []string{"t.yaml:7: vips[0].address: 0.0.0.0 is the unspecified address: a vip must be a unicast address routed to this node"}},
		{"ipv6 unspecified vip", strings.Replace(strings.Replace(base, "203.0.113.10", `"::"`, 1), "198.51.100.11", "2001:db8:b::11", 1),
			[]string{"t.yaml:7: vips[0].address: :: is the unspecified address: a vip must be a unicast address routed to this node"}},
		{"loopback vip", strings.Replace(base, "203.0.113.10", "127.0.0.1", 1), []string{"t.yaml:7: vips[0].address: 127.0.0.1 is a loopback address: a vip must be a unicast address routed to this node"}},
		{"mapped loopback vip", strings.Replace(base, "203.0.113.10", "::ffff:127.0.0.2", 1), []string{"t.yaml:7: vips[0].address: ::ffff:127.0.0.2 is a loopback address: a vip must be a unicast address routed to this node"}},
		{"link-local vip", strings.Replace(base, "203.0.113.10", "169.254.1.1", 1), []string{"t.yaml:7: vips[0].address: 169.254.1.1 is a link-local address: a vip must be a unicast address routed to this node"}},
		{"ipv6 link-local vip", strings.Replace(strings.Replace(base, "203.0.113.10", "fe80::1", 1), "198.51.100.11", "2001:db8:b::11", 1),
			[]string{"t.yaml:7: vips[0].address: fe80::1 is a link-local address: a vip must be a unicast address routed to this node"}},
		{"broadcast vip", strings.Replace(base, "203.0.113.10", "255.255.255.255", 1), []string{"t.yaml:7: vips[0].address: 255.255.255.255 is the broadcast address: a vip must be a unicast address routed to this node"}},
		{"vip in this network", strings.Replace(base, "203.0.113.10", "0.1.2.3", 1), []string{"t.yaml:7: vips[0].address: 0.1.2.3 is in 0.0.0.0/8 (this network): a vip must be a unicast address routed to this node"}},
		{"vip with a zone", strings.Replace(strings.Replace(base, "203.0.113.10", "2001:db8:f::10%eth0", 1), "198.51.100.11", "2001:db8:b::11", 1),
			[]string{"t.yaml:7: vips[0].address: 2001:db8:f::10%eth0 has a zone (%eth0): a vip must be a unicast address routed to this node"}},
		{"backend 0.0.0.0", strings.Replace(base, "198.51.100.11", "0.0.0.0", 1), []string{"t.yaml:11: vips[0].backends[0].address: 0.0.0.0 is the unspecified address: a backend must be a unicast address routed from this node"}},
		{"loopback backend", strings.Replace(base, "198.51.100.11", "127.0.0.1", 1), []string{"t.yaml:11: vips[0].backends[0].address: 127.0.0.1 is a loopback address: a backend must be a unicast address routed from this node"}},
		{"ipv6 loopback backend", base + "      - address: ::1\n", []string{"t.yaml:12: vips[0].backends[1].address: ::1 is a loopback address: a backend must be a unicast address routed from this node"}},
		{"multicast backend", strings.Replace(base, "198.51.100.11", "239.1.1.1", 1), []string{"t.yaml:11: vips[0].backends[0].address: 239.1.1.1 is a multicast address: a backend must be a unicast address routed from this node"}},
		{"link-local backend", base + "      - address: fe80::2\n", []string{"t.yaml:12: vips[0].backends[1].address: fe80::2 is a link-local address: a backend must be a unicast address routed from this node"}},
		{"broadcast backend", strings.Replace(base, "198.51.100.11", "255.255.255.255", 1), []string{"t.yaml:11: vips[0].backends[0].address: 255.255.255.255 is the broadcast address: a backend must be a unicast address routed from this node"}},
		{"backend is the vip", strings.Replace(base, "198.51.100.11", "203.0.113.10", 1),
			[]string{"t.yaml:11: vips[0].backends[0].address: 203.0.113.10 is the address of vips[0] (web): encapsulated packets would come back to the load balancer"}},
		{"backend is another vip", base + "      - address: 203.0.113.11\n  - name: web2\n    address: 203.0.113.11\n    protocol: tcp\n    backends:\n      - address: 198.51.100.11\n",
			[]string{"t.yaml:12: vips[0].backends[1].address: 203.0.113.11 is the address of vips[1] (web2): encapsulated packets would come back to the load balancer"}},
		{"bgp router id 0.0.0.0", base + strings.Replace(bgpOn, "192.0.2.2", "0.0.0.0", 1), []string{`t.yaml:15: bgp.router_id: "0.0.0.0": want a non-zero ipv4 address`}},
		{"bgp peer multicast", base + strings.Replace(bgpOn, "192.0.2.1", "224.0.0.5", 1), []string{"t.yaml:17: bgp.peers[0].address: 224.0.0.5 is a multicast address: want the peer's unicast address"}},
		{"bgp peer unspecified", base + strings.Replace(bgpOn, "192.0.2.1", `"::"`, 1), []string{"t.yaml:17: bgp.peers[0].address: :: is the unspecified address: want the peer's unicast address"}},
		{"bgp listen port too big", base + bgpOn + "  listen_port: 99999\n", []string{"t.yaml:19: bgp.listen_port: 99999: want -1 (do not listen), 0 (179) or a port up to 65535"}},
		{"bgp listen port below -1", base + bgpOn + "  listen_port: -2\n", []string{"t.yaml:19: bgp.listen_port: -2: want -1 (do not listen), 0 (179) or a port up to 65535"}},
		{"bgp peer port too big", strings.Replace(base+bgpOn, "asn: 65000\n", "asn: 65000\n      port: 65536\n", 1), []string{"t.yaml:19: bgp.peers[0].port: 65536: want 1 to 65535 (0: 179)"}},
		{"health port too big", base + "    health:\n      type: tcp\n      port: 65536\n", []string{"t.yaml:14: vips[0].health.port: 65536: want 0 (the vip's port) to 65535"}},
		{"backend health port negative", base + "        health:\n          port: -1\n", []string{"t.yaml:13: vips[0].backends[0].health.port: -1: want 0 (the vip's port) to 65535"}},
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

func TestIsPrime(t *testing.T) {
	for n, want := range map[uint32]bool{0: false, 1: false, 2: true, 3: true, 4: false, 257: true, 65536: false, 65537: true,
		1048573: true, 1048575: false, 4294967291: true, 4294967295: false, 65521 * 65521: false, 4294836225: false} {
		if got := isPrime(n); got != want {
			t.Errorf("isPrime(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]uint32{"65001:100": 65001<<16 | 100, "0:0": 0, "65535:65535": 0xffffffff} {
		if got, err := ParseCommunity(in); err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %#x, %v; want %#x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "65001", "65536:1", "1:65536", "a:b", "-1:2", "65001:100abc", "1:2:3", " 1:2"} {
		if _, err := ParseCommunity(in); err == nil {
			t.Errorf("ParseCommunity(%q): no error", in)
		}
	}
}

// TestWarnings: a valid configuration gives exactly the listed warnings, with their lines.
func TestWarnings(t *testing.T) {
	const open = "anyone who can reach it reads /v1/state and /metrics, and the API speaks plain HTTP"
	const more = "      - address: 198.51.100.12\n      - address: 198.51.100.13\n"
	const noToken = "t.yaml:12: admin.token_file: not set while admin.listen is not a loopback address: nothing on a network-facing API is authenticated (changes are refused, reads are open)"
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"default admin", base, nil},
		{"loopback admin", base + "admin:\n  listen: 127.0.0.53:9100\n", nil},
		{"ipv6 loopback admin", base + "admin:\n  listen: \"[::1]:9100\"\n", nil},
		{"localhost admin", base + "admin:\n  listen: localhost:9100\n", nil},
		{"every address", base + "admin:\n  listen: 0.0.0.0:9100\n", []string{noToken,
			"t.yaml:13: admin.listen: 0.0.0.0:9100 is not a loopback address: " + open +
				" (state and metrics cross the network in clear text); listen on 127.0.0.1 and put a TLS proxy in front"}},
		{"empty host", base + "admin:\n  listen: :9100\n", []string{noToken,
			"t.yaml:13: admin.listen: :9100 is not a loopback address: " + open +
				" (state and metrics cross the network in clear text); listen on 127.0.0.1 and put a TLS proxy in front"}},
		{"vip ring too small for its backends", strings.Replace(base+more, "    port: 80\n", "    port: 80\n    ring_size: 257\n", 1), []string{
			"t.yaml:9: vips[0].ring_size: vip web: 257 slots for 3 backends, fewer than 100 per backend: shares may differ by more than a few percent; use a prime of at least 300"}},
		{"global ring too small for a vip", base + more + "xdp:\n  ring_size: 257\n", []string{
			"t.yaml:15: xdp.ring_size: vip web: 257 slots for 3 backends, fewer than 100 per backend: shares may differ by more than a few percent; use a prime of at least 300"}},
		{"nftables with the modulo slot mapping", base + "dataplane: nftables\n", []string{
			"t.yaml:12: dataplane: nftables always maps a flow's hash to a ring slot by scaling; XDP nodes of the same fleet pick the same backend for a flow only with xdp.slot_mapping: scaled on every node (here: modulo)"}},
		{"nftables with the scaled slot mapping", base + "dataplane: nftables\nxdp:\n  slot_mapping: scaled\n", nil},
		{"public address with a token", base + "admin:\n  listen: 192.0.2.5:9100\n  token_file: /etc/l4lb/token\n", []string{
			"t.yaml:13: admin.listen: 192.0.2.5:9100 is not a loopback address: " + open +
				" (state, metrics and the bearer token cross the network in clear text); listen on 127.0.0.1 and put a TLS proxy in front"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.yaml")
			if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
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
			// Warnings is the pure part: the same fields and messages, no place.
			pure := Warnings(mustParse(t, tc.yaml))
			if len(pure) != len(ws) {
				t.Fatalf("Warnings: %d, parse: %d", len(pure), len(ws))
			}
			placed := map[string]string{}
			for _, w := range ws {
				placed[w.Field] = w.Msg
			}
			for _, p := range pure {
				if msg, ok := placed[p.Field]; !ok || msg != p.Msg || p.File != "" || p.Line != 0 {
					t.Errorf("Warnings: %+v, want the same field and message as parse's, without a place", p)
				}
			}
			// LoadWithWarnings reads the same from a file.
			if _, lw, err := LoadWithWarnings(path); err != nil || len(lw) != len(ws) {
				t.Errorf("LoadWithWarnings: %v, %v", lw, err)
			}
		})
	}
}

func mustParse(t *testing.T, y string) *Config {
	t.Helper()
	c, err := Parse("t.yaml", []byte(y), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
