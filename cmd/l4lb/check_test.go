package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l4lb/l4lb/internal/testutil"
)

// writeCheckConfig writes a configuration for check and returns its path.
func writeCheckConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "l4lb.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// check warns about a prefilter.deny entry that covers a BGP peer or a backend, and
// still passes.
func TestCheckDenyCovers(t *testing.T) {
	path := writeCheckConfig(t, `interfaces: [eth0]
nexthop: {mac: "02:00:00:00:00:01"}
encap: {source4: 192.0.2.0/24}
bgp:
  enabled: true
  local_asn: 65001
  router_id: 192.0.2.2
  peers: [{address: 192.0.2.1, asn: 65000}]
vips:
  - {name: web, address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.51.100.11}]}
prefilter:
  deny: [203.0.113.96/29, 198.51.100.0/24, 192.0.2.1]
`)
	out, err := run("check", "-c", path)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{
		path + ":12: warning: prefilter.deny[1]: 198.51.100.0/24 covers backend 198.51.100.11 (vip web): the prefilter drops their packets",
		path + ":12: warning: prefilter.deny[2]: 192.0.2.1/32 covers bgp peer 192.0.2.1: the prefilter drops their packets",
		path + ": ok (1 vips, 2 warning(s))",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

// check warns for each interface whose next hop's MAC it cannot find (as `l4lb run`
// resolves it), naming the interface, unless nexthop.mac is set or the data plane is
// not XDP.
func TestPrivilegedCheckNextHop(t *testing.T) {
	testutil.RequirePrivileged(t)
	lb := testutil.NewNetNS(t, "lb")
	router := testutil.NewNetNS(t, "r")
	testutil.Veth(t, lb, "up0", router, "r0")
	testutil.Veth(t, lb, "bare0", router, "r1")
	lb.Run(t, "ip", "addr", "add", "192.0.2.2/26", "dev", "up0")
	lb.Run(t, "ip", "route", "add", "default", "via", "192.0.2.1", "dev", "up0")
	lb.Run(t, "ip", "neigh", "replace", "192.0.2.1", "lladdr", "02:00:00:00:01:01", "dev", "up0", "nud", "permanent")

	const vips = "encap: {source4: 192.0.2.192/26}\nvips:\n  - {name: web, address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.51.100.11}]}\n"
	check := func(cfg string) string {
		t.Helper()
		path := writeCheckConfig(t, cfg+vips)
		var out string
		if err := lb.Do(func() error {
			var err error
			out, err = run("check", "-c", path)
			return err
		}); err != nil {
			t.Fatalf("check: %v\n%s", err, out)
		}
		return out
	}
	for _, dataplane := range []string{"xdp", "auto"} {
		out := check("interfaces: [up0, bare0, gone0]\ndataplane: " + dataplane + "\n")
		for _, want := range []string{
			"warning: interfaces: bare0: no next hop mac found (no route with a gateway through it)",
			"warning: interfaces: gone0: no next hop mac found (no such interface",
			"ok (1 vips, 2 warning(s))",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("dataplane %s: check output lacks %q:\n%s", dataplane, want, out)
			}
		}
		if strings.Contains(out, "up0") {
			t.Errorf("dataplane %s: a warning for up0, whose next hop is resolved:\n%s", dataplane, out)
		}
	}
	for _, cfg := range []string{
		"interfaces: [bare0]\ndataplane: xdp\nnexthop: {mac: \"02:00:00:00:01:01\"}\n",
		"interfaces: [bare0]\ndataplane: nftables\nxdp: {slot_mapping: scaled}\n",
	} {
		if out := check(cfg); strings.Contains(out, "warning") {
			t.Errorf("%q: want no warning:\n%s", cfg, out)
		}
	}
}

// check says which path tunnel health checks take with the configured data plane.
func TestCheckHealthPathNotes(t *testing.T) {
	const vips = `encap: {source4: 192.0.2.0/24}
vips:
  - name: web
    address: 203.0.113.10
    port: 80
    protocol: tcp
    health: {type: http, via: tunnel}
    backends: [{address: 198.51.100.11}, {address: 198.51.100.12, health: {via: direct}}]
  - {name: dns, address: 203.0.113.10, port: 53, protocol: udp, health: {type: udp, payload: ping}, backends: [{address: 198.51.100.11}]}
`
	for dataplane, want := range map[string]string{
		"xdp":      "note: vip web: 1 of 2 backends checked via tunnel: to the vip, encapsulated to each backend as forwarded traffic",
		"nftables": "note: vip web: 1 of 2 backends checked via tunnel: direct: nftables forwards by DNAT to the backend's address",
		"auto":     "note: vip web: 1 of 2 backends checked via tunnel: with dataplane auto, through the tunnel if xdp is chosen at start",
	} {
		path := writeCheckConfig(t, "interfaces: [eth0]\nnexthop: {mac: \"02:00:00:00:00:01\"}\ndataplane: "+dataplane+"\n"+vips)
		out, err := run("check", "-c", path)
		if err != nil {
			t.Fatalf("%s: check: %v\n%s", dataplane, err, out)
		}
		if !strings.Contains(out, path+": "+want) || strings.Contains(out, "vip dns") {
			t.Errorf("%s: check output lacks %q (or names dns):\n%s", dataplane, want, out)
		}
	}
}
