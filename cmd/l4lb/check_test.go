package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
