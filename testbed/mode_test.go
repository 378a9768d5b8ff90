package testbed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/testbed"
)

// testMode is the data plane the testbed tests run the LB nodes on: L4LB_TESTBED_MODE
// (auto, xdp, nftables, iptables), or the committed configs' (xdp) when unset.
func testMode() string { return os.Getenv("L4LB_TESTBED_MODE") }

// skipNAT skips what only XDP mode can do.
func skipNAT(t *testing.T, why string) {
	t.Helper()
	if m := testMode(); m == "nftables" || m == "iptables" {
		t.Skipf("%s mode: %s (docs/architecture.md)", m, why)
	}
}

// udpAsk sends one datagram from the client's sport to addr and returns the answer (the
// backend's name).
func udpAsk(b *testbed.Bed, sport int, addr netip.AddrPort) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return "", err
	}
	defer orig.Close()
	target, err := netns.GetFromName(b.NS("client"))
	if err != nil {
		return "", err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return "", err
	}
	c, derr := net.DialUDP("udp", &net.UDPAddr{Port: sport}, net.UDPAddrFromAddrPort(addr))
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", err))
	}
	if derr != nil {
		return "", derr
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("which")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// TestPrivilegedTestbedMixedModes runs lb1 on XDP and lb2 on nftables (or the NAT mode
// L4LB_TESTBED_MODE names) with the same config:
//   - the same 1,000 flows (UDP, fixed source ports), sent through lb1 and then through
//     lb2, reach the same backends (IPv4 and IPv6), when both nodes run a Maglev mode;
//   - lb2 reports its mode; a rule deleted by hand comes back and is counted;
//   - `l4lb cleanup` leaves no rule behind.
func TestPrivilegedTestbedMixedModes(t *testing.T) {
	nat := testMode()
	if nat != "iptables" {
		nat = "nftables"
	}
	b := newBed(t, func(c *testbed.Config) { c.NodeModes = map[string]string{"lb1": "xdp", "lb2": nat} })
	ctx := context.Background()
	for lb, want := range map[string]string{"lb1": "xdp", "lb2": nat} {
		out, err := b.Output(ctx, lb, b.L4LB(), "status", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var v daemon.View
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatal(err)
		}
		if v.Mode != want || !strings.Contains(v.ModeReason, "configured") {
			t.Fatalf("%s runs %q (%s), want %s", lb, v.Mode, v.ModeReason, want)
		}
	}

	t.Run("the same flows reach the same backends through either node", func(t *testing.T) {
		if nat == "iptables" {
			t.Skip("iptables picks backends at random (statistic mode): not consistent across nodes, as documented")
		}
		// The router sends the client's traffic to one node at a time (policy routing
		// ahead of the ECMP routes BIRD installs).
		route := func(lb string) {
			for _, r := range [][]string{
				{"ip", "route", "replace", testbed.VIP4 + "/32", "via", testbed.LBAddr4(lb), "table", "100"},
				{"ip", "-6", "route", "replace", testbed.VIP6 + "/128", "via", testbed.LBAddr6(lb), "table", "100"},
			} {
				if err := b.In("router", r...); err != nil {
					t.Fatal(err)
				}
			}
		}
		route("lb1")
		for _, r := range [][]string{
			{"ip", "rule", "add", "from", testbed.Client4, "lookup", "100", "pref", "100"},
			{"ip", "-6", "rule", "add", "from", testbed.Client6, "lookup", "100", "pref", "100"},
		} {
			if err := b.In("router", r...); err != nil {
				t.Fatal(err)
			}
		}
		const n = 1000
		for _, vip := range []netip.AddrPort{
			netip.AddrPortFrom(netip.MustParseAddr(testbed.VIP4), 53),
			netip.AddrPortFrom(netip.MustParseAddr(testbed.VIP6), 53),
		} {
			got := map[string][]string{}
			for _, lb := range testbed.LBNodes {
				route(lb)
				for i := range n {
					a, err := udpAsk(b, 30000+i, vip)
					if err != nil {
						a = "error: " + err.Error()
					}
					got[lb] = append(got[lb], a)
				}
			}
			same, spread := 0, map[string]int{}
			for i := range n {
				if got["lb1"][i] == got["lb2"][i] && !strings.HasPrefix(got["lb1"][i], "error") {
					same++
				} else if i-same < 5 {
					t.Errorf("%s flow from port %d: %s via lb1 (xdp), %s via lb2 (%s)", vip, 30000+i, got["lb1"][i], got["lb2"][i], nat)
				}
				spread[got["lb1"][i]]++
			}
			t.Logf("%s: %d of %d flows reached the same backend through xdp and %s (spread %v)", vip, same, n, nat, spread)
			if same != n || len(spread) != 3 {
				t.Errorf("%s: %d of %d flows reached the same backend, over %v", vip, same, n, spread)
			}
		}
	})

	t.Run("a rule deleted by hand comes back", func(t *testing.T) {
		// nft -t: without the rings' elements (65537 per VIP), which nft would otherwise
		// fetch and print.
		list := []string{"nft", "-t", "-a", "list", "chain", "inet", "l4lb", "vip_dnat"}
		re := regexp.MustCompile(`comment "l4lb vip 203\.0\.113\.10 80 6 [^"]*" # handle (\d+)`)
		if nat == "iptables" {
			list = []string{"iptables-save", "-t", "nat"}
			re = regexp.MustCompile(`-A L4LB-POSTROUTING .*--comment "l4lb masq 203\.0\.113\.10"()`)
		}
		find := func() (string, bool) {
			out, err := b.Output(ctx, "lb2", list...)
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			m := re.FindStringSubmatch(out)
			if m == nil {
				return "", false
			}
			return m[1], true
		}
		handle, ok := find()
		if !ok {
			t.Fatal("no rule to delete")
		}
		del := []string{"nft", "delete", "rule", "inet", "l4lb", "vip_dnat", "handle", handle}
		if nat == "iptables" {
			del = []string{"iptables", "-t", "nat", "-F", "L4LB-POSTROUTING"}
		}
		if out, err := b.Output(ctx, "lb2", del...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		deleted := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		// The node counts the restoration (l4lb_xdp_packets_total{counter=rules_restored})
		// and the rule is there again, under a new handle for nftables. (Listing is slow
		// with 65537-slot rings, so the metric is what is polled.)
		var out string
		if !testbed.Eventually(cctx, func() bool {
			out, _ = b.Output(cctx, "lb2", "curl", "-s", "http://127.0.0.1:9100/metrics")
			return strings.Contains(out, `counter="rules_restored"} 1`)
		}) {
			t.Fatalf("no restoration counted in 10s:\n%s", grepLines(out, "rules_restored"))
		}
		t.Logf("the deletion was noticed and counted after %s (check interval 2s)", time.Since(deleted).Round(10*time.Millisecond))
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		defer rcancel()
		if !testbed.Eventually(rctx, func() bool {
			h, ok := find()
			return ok && (nat == "iptables" || h != handle)
		}) {
			t.Fatal("the deleted rule did not come back in 10s")
		}
	})

	t.Run("cleanup leaves no rule behind", func(t *testing.T) {
		if err := b.Signal("lb2", "l4lb", syscall.SIGTERM, 15*time.Second); err != nil {
			t.Fatal(err)
		}
		cfg, env := b.LBConfig("lb2")
		if out, err := b.Output(ctx, "lb2", append(append([]string{"env"}, env...), b.L4LB(), "cleanup", "--config", cfg)...); err != nil {
			t.Fatalf("l4lb cleanup: %v\n%s", err, out)
		}
		for _, c := range [][]string{{"nft", "list", "ruleset"}, {"iptables-save"}, {"ip6tables-save"}} {
			out, err := b.Output(ctx, "lb2", c...)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out, "l4lb") || strings.Contains(out, "L4LB") {
				t.Errorf("after cleanup, %s shows:\n%s", strings.Join(c, " "), out)
			}
		}
	})
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
