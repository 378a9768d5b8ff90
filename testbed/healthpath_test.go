package testbed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/testbed"
)

// states reads, on every LB node, each backend of the named VIPs: "lb vip addr" -> view.
func states(t *testing.T, ctx context.Context, b *testbed.Bed, vips ...string) map[string]daemon.BackendView {
	t.Helper()
	out := map[string]daemon.BackendView{}
	for _, lb := range testbed.LBNodes {
		raw, err := b.Output(ctx, lb, b.L4LB(), "status", "-o", "json")
		if err != nil {
			t.Fatalf("%s: status: %v\n%s", lb, err, raw)
		}
		var v daemon.View
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatalf("%s: %v", lb, err)
		}
		for _, vip := range v.VIPs {
			for _, name := range vips {
				if vip.Name == name {
					for _, be := range vip.Backends {
						out[lb+" "+name+" "+be.Address] = be
					}
				}
			}
		}
	}
	return out
}

// waitHealth waits until, on both LB nodes, the VIPs' backend addr is healthy (up) or not.
func waitHealth(t *testing.T, b *testbed.Bed, up bool, addr string, vips ...string) time.Duration {
	t.Helper()
	start := time.Now()
	ctx := context.Background()
	for {
		st := states(t, ctx, b, vips...)
		done := true
		for _, lb := range testbed.LBNodes {
			for _, v := range vips {
				if be, ok := st[lb+" "+v+" "+addr]; !ok || be.Healthy != up {
					done = false
				}
			}
		}
		if done {
			return time.Since(start)
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("%s of %v not %s on both nodes within 15s: %+v", addr, vips, map[bool]string{true: "up", false: "down"}[up], st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPrivilegedTunnelCheckTestbed: the web VIPs' and dns6's checks (via: tunnel in the
// testbed's configs) go to the VIP through the tunnel. A backend whose decap stops, or whose VIP is
// gone from lo, goes down on both LB nodes within a few intervals while its own HTTP
// server still answers, and then no request through the VIP fails. The dns VIP's plain
// check keeps the same backend up: queries hashed to it are lost (the docs' warning).
// Probes never count as VIP traffic.
func TestPrivilegedTunnelCheckTestbed(t *testing.T) {
	testutil.RequireCommands(t, "python3")
	b := newBed(t)
	ctx := context.Background()
	waitAllHealthy(t, b, 30*time.Second)
	be2, be3 := testbed.BackendAddr4("be2"), testbed.BackendAddr4("be3")
	be2v6 := testbed.BackendAddr6("be2")

	st := states(t, ctx, b, "web", "web6", "dns", "dns6")
	for k, be := range st {
		c := be.Check
		want := "tunnel"
		if strings.Contains(k, " dns ") {
			want = "direct"
		}
		if c == nil || c.Via != want || c.LastRTTSeconds <= 0 || c.LastAt.IsZero() {
			t.Errorf("%s: check %+v, want via %s with a round trip", k, c, want)
			continue
		}
		if want == "tunnel" && strings.Contains(c.Target, be.Address) {
			t.Errorf("%s: a tunnel check connects to %s, want the VIP", k, c.Target)
		}
	}

	// No client traffic: the VIPs' packet counters stay still while probes go on.
	vipPackets := func() map[string]uint64 {
		out := map[string]uint64{}
		for _, lb := range testbed.LBNodes {
			raw, err := b.Output(ctx, lb, b.L4LB(), "status", "-o", "json")
			if err != nil {
				t.Fatal(err)
			}
			var v daemon.View
			json.Unmarshal([]byte(raw), &v)
			for _, vip := range v.VIPs {
				out[lb+" "+vip.Name] = vip.Packets
			}
		}
		return out
	}
	before := vipPackets()
	time.Sleep(2 * time.Second) // four intervals of probes
	if after := vipPackets(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("VIP packet counters moved with no client traffic (probes counted?): %v -> %v", before, after)
	}

	t.Run("decap stopped", func(t *testing.T) {
		if err := b.Signal("be2", "decap", syscall.SIGTERM, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		took := waitHealth(t, b, false, be2, "web")
		waitHealth(t, b, false, be2v6, "web6", "dns6") // IPv6, and a udp check
		t.Logf("be2 down on both nodes %s after its decap stopped (fall 2 x interval 500ms)", took.Round(100*time.Millisecond))
		if got := curlCounts(t, b, "http://"+testbed.VIP4+"/", 30); got["be2"] != 0 || got["be1"]+got["be3"] != 30 {
			t.Errorf("requests through web with be2's decap stopped: %v, want all 30 on be1 and be3", got)
		}
		// be2's own server answers, so the plain (direct) check of dns keeps it up:
		// queries hashed to it are lost.
		if s := states(t, ctx, b, "dns"); !s[testbed.LBNodes[0]+" dns "+be2].Healthy {
			t.Errorf("dns's direct check took be2 down too: %+v", s)
		}
		out, _ := b.Output(ctx, "client", "python3", "-c", `import socket
for p in range(41000, 41030):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("`+testbed.Client4+`", p))
    s.settimeout(1)
    s.sendto(b"ping", ("`+testbed.VIP4+`", 53))
    try:
        print(s.recv(64).decode().strip())
    except OSError:
        print("LOST")
    s.close()`)
		lost := strings.Count(out, "LOST")
		t.Logf("dns through the VIP with be2's decap stopped and its direct check passing: %d of 30 queries lost", lost)
		if lost == 0 {
			t.Errorf("no dns query lost: the plain check's blind spot not shown (%q)", out)
		}
		if err := b.StartDecap("be2"); err != nil {
			t.Fatal(err)
		}
		waitHealth(t, b, true, be2, "web")
		waitHealth(t, b, true, be2v6, "web6", "dns6")
	})

	t.Run("vip gone from lo", func(t *testing.T) {
		if err := b.In("be3", "ip", "addr", "del", testbed.VIP4+"/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		restored := false
		defer func() {
			if !restored {
				b.In("be3", "ip", "addr", "add", testbed.VIP4+"/32", "dev", "lo")
			}
		}()
		took := waitHealth(t, b, false, be3, "web")
		t.Logf("be3 down on both nodes %s after its VIP left lo", took.Round(100*time.Millisecond))
		if got := curlCounts(t, b, "http://"+testbed.VIP4+"/", 30); got["be3"] != 0 || got["be1"]+got["be2"] != 30 {
			t.Errorf("requests through web with be3's VIP gone: %v, want all 30 on be1 and be2", got)
		}
		if s := states(t, ctx, b, "web6"); !s[testbed.LBNodes[0]+" web6 "+testbed.BackendAddr6("be3")].Healthy {
			t.Errorf("web6 (its VIP still on be3's lo) took be3 down: %+v", s)
		}
		if err := b.In("be3", "ip", "addr", "add", testbed.VIP4+"/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		restored = true
		waitHealth(t, b, true, be3, "web")
	})
}
