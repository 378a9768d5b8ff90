package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/config"
)

func TestNeedsRestartNamesTheKey(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{
			Interfaces: []string{"eth0"}, Dataplane: "xdp", BPFFS: "/sys/fs/bpf/l4lb", DrainDelay: time.Second,
			Admin: config.Admin{Listen: "127.0.0.1:9100", TokenFile: "/etc/l4lb/token"},
			XDP:   config.XDP{RingSize: 65537, ConntrackSize: 262144, MTU: 1500},
			BGP: config.BGP{Enabled: true, LocalASN: 65010, Communities: []string{"65010:1"},
				Peers: []config.Peer{{Address: "192.0.2.1", ASN: 65000, Password: "s3cret"}}},
			VIPs: []config.VIP{{Name: "web", Address: "203.0.113.10", Port: 80, Protocol: "tcp"}},
		}
	}
	for _, tc := range []struct {
		name   string
		change func(*config.Config)
		want   []string // substrings; empty: reload allowed
	}{
		{"vips, communities, nexthop, encap and drain_delay reload", func(c *config.Config) {
			c.VIPs[0].Port = 8080
			c.BGP.Communities = nil
			c.NextHop.MAC = "02:00:00:00:00:01"
			c.Encap.Source4 = "192.0.2.0/24"
			c.DrainDelay = 0
		}, nil},
		{"token file", func(c *config.Config) { c.Admin.TokenFile = "/etc/l4lb/other" },
			[]string{`admin.token_file: changed from "/etc/l4lb/token" to "/etc/l4lb/other": needs a restart`}},
		{"ring size", func(c *config.Config) { c.XDP.RingSize = 4099 },
			[]string{"xdp.ring_size: changed from 65537 to 4099"}},
		{"interfaces", func(c *config.Config) { c.Interfaces = []string{"eth0", "eth1"} },
			[]string{"interfaces: changed from [eth0] to [eth0 eth1]"}},
		{"peer password is not printed", func(c *config.Config) { c.BGP.Peers[0].Password = "other" },
			[]string{"bgp.peers[0].password: changed from (secret) to (secret)"}},
		{"a peer added", func(c *config.Config) { c.BGP.Peers = append(c.BGP.Peers, config.Peer{Address: "192.0.2.2"}) },
			[]string{"bgp.peers: changed from 1 entries to 2 entries"}},
		{"two keys", func(c *config.Config) { c.BPFFS = "/sys/fs/bpf/x"; c.Dataplane = "nftables" },
			[]string{"bpffs: changed", "dataplane: changed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := base()
			tc.change(cur)
			err := needsRestart(base(), cur)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "other\"") && strings.Contains(tc.name, "password") {
				t.Errorf("secret printed: %v", err)
			}
		})
	}
}
