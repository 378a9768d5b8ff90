package daemon

import (
	"flag"
	"os"
	"path/filepath"
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
		{"vips, communities, nexthop, encap, drain_delay and the deny list reload", func(c *config.Config) {
			c.VIPs[0].Port = 8080
			c.BGP.Communities = nil
			c.NextHop.MAC = "02:00:00:00:00:01"
			c.Encap.Source4 = "192.0.2.0/24"
			c.DrainDelay = 0
			c.Prefilter.Deny = []string{"203.0.113.96/29"}
			c.Prefilter.DenyFiles = []string{"/etc/l4lb/deny.txt"}
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

var update = flag.Bool("update", false, "rewrite the generated part of docs/operations.md")

// The keys docs/operations.md (Reload) lists are the reloadable table's, and every other
// key of the configuration as restart-only; -update rewrites that part of the page.
func TestReloadKeysDoc(t *testing.T) {
	const (
		begin = "<!-- reload keys: generated from pkg/daemon/restart.go by go test ./pkg/daemon -run TestReloadKeysDoc -update -->\n"
		end   = "<!-- end of reload keys -->\n"
	)
	path := filepath.Join("..", "..", "docs", "operations.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	before, rest, ok := strings.Cut(string(doc), begin)
	got, after, ok2 := strings.Cut(rest, end)
	if !ok || !ok2 {
		t.Fatalf("%s has no %q ... %q block", path, strings.TrimSpace(begin), strings.TrimSpace(end))
	}
	want := wrap("A reload applies "+codeList(reloadableKeys())+", with everything under them. Every other key needs a restart "+
		"(a reload that changes one is rejected): "+codeList(restartKeys())+".", 90)
	if got == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(before+begin+want+end+after), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s lists other keys than the code's table; run go test ./pkg/daemon -run TestReloadKeysDoc -update\ngot:\n%s\nwant:\n%s", path, got, want)
}

// codeList is "`a`, `b` and `c`".
func codeList(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = "`" + k + "`"
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " and " + q[len(q)-1]
}

// wrap breaks s into lines of at most width columns (a longer word stands alone), each
// ending in a newline.
func wrap(s string, width int) string {
	var sb strings.Builder
	n := 0
	for _, w := range strings.Fields(s) {
		if n > 0 && n+1+len(w) > width {
			sb.WriteString("\n")
			n = 0
		}
		if n > 0 {
			sb.WriteString(" ")
			n++
		}
		sb.WriteString(w)
		n += len(w)
	}
	sb.WriteString("\n")
	return sb.String()
}
