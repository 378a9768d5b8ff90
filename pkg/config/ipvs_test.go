package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestIPVSKeys: the ipvs keys and vips[].forward, valid and not.
func TestIPVSKeys(t *testing.T) {
	fwd := func(f string) string {
		return strings.Replace(base, "    protocol: tcp\n", "    protocol: tcp\n    forward: "+f+"\n", 1)
	}
	for _, tc := range []struct {
		name string
		yaml string
		want []string
	}{
		{"previous release's config", base, nil},
		{"ipvs with defaults", base + "dataplane: ipvs\n", nil},
		{"ipvs masq", fwd("masq") + "dataplane: ipvs\n", nil},
		{"ipvs tunnel", fwd("tunnel") + "dataplane: ipvs\n", nil},
		{"ipvs keys", base + "dataplane: ipvs\nipvs:\n  consider_in_auto: true\n  vip_device: \"\"\n  state_file: /run/l4lb/ipvs.json\n  resync_interval: 1s\n", nil},
		{"bad forward", fwd("dsr") + "dataplane: ipvs\n", []string{`t.yaml:10: vips[0].forward: "dsr": want tunnel or masq`}},
		{"masq with xdp", fwd("masq") + "dataplane: xdp\n", []string{"t.yaml:10: vips[0].forward: masq needs dataplane ipvs (the xdp data plane always encapsulates)"}},
		{"masq with socket", strings.Replace(fwd("masq"), "interfaces: [eth0]\n", "", 1) + "dataplane: socket\n", []string{"t.yaml:9: vips[0].forward: masq needs dataplane ipvs (the socket data plane connects sockets straight to backends)"}},
		{"masq with auto", fwd("masq"), nil},
		{"masq across families", strings.Replace(fwd("masq"), "198.51.100.11", "2001:db8::11", 1) + "dataplane: ipvs\n",
			[]string{"t.yaml:12: vips[0].backends[0].address: 2001:db8::11: masq cannot translate between IPv4 and IPv6 (use forward: tunnel)"}},
		{"long device", base + "ipvs:\n  vip_device: a-very-long-device-name\n", []string{`t.yaml:13: ipvs.vip_device: "a-very-long-device-name" is not an interface name (at most 15 characters, no / or space)`}},
		{"relative state", base + "ipvs:\n  state_file: ipvs.json\n", []string{`t.yaml:13: ipvs.state_file: "ipvs.json": want an absolute path`}},
		{"zero resync", base + "ipvs:\n  resync_interval: 0s\n", []string{"t.yaml:13: ipvs.resync_interval: must be positive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(tc.yaml), noEnv)
			var got []string
			var ps Problems
			if errors.As(err, &ps) {
				for _, p := range ps {
					got = append(got, p.String())
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if err == nil && c.IPVS.StateFile == "" {
				t.Errorf("ipvs.state_file has no default")
			}
		})
	}
}
