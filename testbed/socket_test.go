package testbed_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/testbed"
)

// TestPrivilegedSocketLBTestbed runs l4lb with dataplane: socket in the client namespace
// (an application host): curl in its cgroup reaches the web backends straight from
// connect(), and the LB nodes' counters of the VIP do not move: the traffic bypassed
// them. Without the socket LB the same curl goes through the LB nodes.
func TestPrivilegedSocketLBTestbed(t *testing.T) {
	b := newBed(t)
	ctx := context.Background()
	dir := t.TempDir()

	// `ip netns exec` mounts a fresh /sys: the cgroup2 hierarchy is mounted again outside
	// it, with a cgroup for the client's applications.
	cgRoot := filepath.Join(dir, "cgroup2")
	os.Mkdir(cgRoot, 0o755)
	if err := syscall.Mount("cgroup2", cgRoot, "cgroup2", 0, ""); err != nil {
		t.Fatalf("mount cgroup2: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(cgRoot, 0) })
	var r [3]byte
	rand.Read(r[:])
	cg := filepath.Join(cgRoot, "l4lbt-apps-"+hex.EncodeToString(r[:]))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 100; i++ {
			if err := os.Remove(cg); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("remove cgroup %s", cg)
	})
	bpffs := filepath.Join(dir, "bpffs")
	os.Mkdir(bpffs, 0o700)
	if err := syscall.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(bpffs, 0) })

	var backends []string
	for _, be := range testbed.BackendNodes {
		backends = append(backends, "      - address: "+testbed.BackendAddr4(be))
	}
	cfgPath := filepath.Join(dir, "client.yaml")
	cfg := fmt.Sprintf(`dataplane: socket
bpffs: %s/l4lb
state_file: %s/state.json
drain_delay: 0s
socket_lb:
  cgroup: %s
admin:
  listen: 127.0.0.1:9100
vips:
  - name: web
    address: %s
    port: 80
    protocol: tcp
    health: {type: http, interval: 500ms, timeout: 400ms, rise: 1, fall: 2, path: /}
    backends:
%s
`, bpffs, dir, cg, testbed.VIP4, strings.Join(backends, "\n"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cgf, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer cgf.Close()
	// curls runs n curls to the VIP from the client, in the applications' cgroup.
	curls := func(n int) map[string]int {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		cmd := b.Command(cctx, "client", "sh", "-c", fmt.Sprintf("for i in $(seq %d); do curl -s -m 2 http://%s/ || echo FAILED; done", n, testbed.VIP4))
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for _, l := range strings.Fields(string(out)) {
			counts[l]++
		}
		return counts
	}
	// lbPackets sums the LB nodes' packet counters of the web VIP.
	lbPackets := func() uint64 {
		t.Helper()
		var sum uint64
		for _, lb := range testbed.LBNodes {
			out, err := b.Output(ctx, lb, b.L4LB(), "status", "-o", "json")
			if err != nil {
				t.Fatalf("%s status: %v", lb, err)
			}
			var v daemon.View
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatal(err)
			}
			for _, vip := range v.VIPs {
				if vip.Name == "web" {
					sum += vip.Packets
				}
			}
		}
		return sum
	}

	// Through the LB nodes first: their counters move.
	before := lbPackets()
	if got := curls(10); got["FAILED"] != 0 {
		t.Fatalf("curl through the lb nodes: %v", got)
	}
	through := lbPackets()
	if through == before {
		t.Fatalf("lb nodes counted nothing for 10 requests through them (%d)", through)
	}

	if err := b.Start("client", "l4lb-socket", nil, b.L4LB(), "run", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Signal("client", "l4lb-socket", syscall.SIGTERM, 5*time.Second)
		b.Output(ctx, "client", b.L4LB(), "cleanup", "--config", cfgPath)
	})
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var state daemon.View
	if !testbed.Eventually(sctx, func() bool {
		out, err := b.Output(sctx, "client", b.L4LB(), "status", "-o", "json")
		if err != nil || json.Unmarshal([]byte(out), &state) != nil || len(state.VIPs) != 1 || state.SocketLB == nil || !state.SocketLB.Attached {
			return false
		}
		for _, be := range state.VIPs[0].Backends {
			if !be.Healthy {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("client's socket lb not attached with healthy backends: %+v", state)
	}

	got := curls(30)
	if got["FAILED"] != 0 || len(got) != len(testbed.BackendNodes) {
		t.Fatalf("30 curls through the socket lb: %v, want all backends", got)
	}
	if after := lbPackets(); after != through {
		t.Errorf("lb nodes' web packets moved from %d to %d: the socket lb did not bypass them", through, after)
	}
	out, err := b.Output(ctx, "client", b.L4LB(), "status", "-o", "json")
	if err != nil || json.Unmarshal([]byte(out), &state) != nil {
		t.Fatalf("client status: %v", err)
	}
	if c := state.VIPs[0].Socket; c == nil || c.Connects != 30 {
		t.Errorf("client's socket connects: %+v, want 30", c)
	}
}
