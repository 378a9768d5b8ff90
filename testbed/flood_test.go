package testbed_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netns"
	yaml "go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
	"github.com/l4lb/l4lb/testbed"
)

// TestPrivilegedFloodTestbed (L4LB_FLOOD_TEST=1, or `make flood`): with 50 long-lived
// connections open through the web VIP, half of them idle, 1,000,000 SYNs from spoofed
// sources (198.51.100.128/25, random ports) flood the VIP from the client namespace; a
// backend is added to the VIP; every connection, idle or not, is then still answered by
// its backend. The VIP's new-flow guard keeps the flood from filling conntrack. The test
// prints conntrack occupancy and the guard counters before, during and after.
func TestPrivilegedFloodTestbed(t *testing.T) {
	if os.Getenv("L4LB_FLOOD_TEST") == "" {
		t.Skip("the flood test takes about a minute: set L4LB_FLOOD_TEST=1 (make flood)")
	}
	const (
		nConns    = 50
		nSYN      = 1_000_000
		guardRate = 500 // new flows per second per CPU
	)
	dir := t.TempDir()
	writeConf := func(web ...string) {
		for _, lb := range testbed.LBNodes {
			raw, err := os.ReadFile(filepath.Join("..", "conf", "testbed", lb+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var cfg map[string]any
			if err := yaml.Unmarshal(raw, &cfg); err != nil {
				t.Fatal(err)
			}
			var bs []map[string]any
			for _, n := range web {
				bs = append(bs, map[string]any{"address": testbed.BackendAddr4(n)})
			}
			health := map[string]any{"type": "http", "interval": "500ms", "timeout": "400ms", "rise": 2, "fall": 2, "path": "/"}
			cfg["vips"] = []map[string]any{
				{"name": "web", "address": testbed.VIP4, "port": 80, "protocol": "tcp", "health": health, "backends": bs,
					"guard": map[string]any{"new_flow_rate": guardRate}},
				{"name": "web6", "address": testbed.VIP6, "port": 80, "protocol": "tcp", "health": health, "backends": []map[string]any{
					{"address": testbed.BackendAddr6("be1")}, {"address": testbed.BackendAddr6("be2")}, {"address": testbed.BackendAddr6("be3")}}},
			}
			out, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, lb+".yaml"), out, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeConf("be1", "be2")
	b := newBedWith(t, func(lb string) (string, []string) { return filepath.Join(dir, lb+".yaml"), nil })
	ctx := context.Background()

	conntrack := map[string]*ebpf.Map{}
	for _, lb := range testbed.LBNodes {
		m, err := ebpf.LoadPinnedMap(filepath.Join(bpffsOf(t, lb), "l4lb", "conntrack"), nil)
		if err != nil {
			t.Fatalf("%s: open the pinned conntrack: %v", lb, err)
		}
		t.Cleanup(func() { m.Close() })
		conntrack[lb] = m
	}
	report := func(when string) {
		for _, lb := range testbed.LBNodes {
			n, err := xdp.ConntrackEntries(conntrack[lb])
			if err != nil {
				t.Fatal(err)
			}
			v := lbStatus(t, b, lb)
			t.Logf("%-7s %s: conntrack %7d of %d entries; ct_miss %d, guard_untracked %d, guard_drop %d",
				when, lb, n, xdp.ConntrackCapacity(conntrack[lb]), v.Counters["ct_miss"], v.Counters["guard_untracked"], v.Counters["guard_drop"])
		}
	}

	conns := openKeptAlive(t, b, nConns)
	report("before")

	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- synFlood(b, nSYN) }()
	// The active half keeps talking during the flood.
	for flooding := true; flooding; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("flood: %v", err)
			}
			flooding = false
		case <-time.After(time.Second):
			report("during")
			for i := 0; i < nConns; i += 2 {
				if be, err := conns[i].Get(); err != nil || be != conns[i].Backend {
					t.Errorf("during the flood, active connection %d: %q, %v (was %s)", i, be, err, conns[i].Backend)
				}
			}
		}
	}
	t.Logf("flood: %d spoofed SYNs sent in %s", nSYN, time.Since(start).Round(time.Millisecond))
	time.Sleep(time.Second)
	report("after")

	// A backend is added: the ring changes, so only conntrack keeps flows where they are.
	writeConf("be1", "be2", "be3")
	for _, lb := range testbed.LBNodes {
		if out, err := b.Output(ctx, lb, "kill", "-HUP", fmt.Sprint(lbPID(t, b, lb))); err != nil {
			t.Fatalf("%s: reload: %v %s", lb, err, out)
		}
	}
	waitWeb(t, b, 3, 20*time.Second)
	broken := 0
	for i, c := range conns {
		be, err := c.Get()
		if err != nil || be != c.Backend {
			broken++
			t.Errorf("after the flood and the new backend, connection %d (idle %v): %q, %v (was %s)", i, i%2 == 1, be, err, c.Backend)
		}
	}
	t.Logf("%d of %d connections (%d idle through the flood) kept their backend", nConns-broken, nConns, nConns/2)
	report("end")
}

// bpffsOf finds an LB node's bpffs mount of this test's bed.
func bpffsOf(t *testing.T, lb string) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[2] == "bpf" && strings.Contains(f[1], tempDirName(t)) && strings.HasSuffix(f[1], "/"+lb+"/bpffs") {
			return f[1]
		}
	}
	t.Fatalf("no bpffs mount of %s for %s", lb, t.Name())
	return ""
}

// tempDirName is the test's name as t.TempDir puts it in the path: only letters, digits
// and a few punctuation marks kept (a subtest's "/" is dropped).
func tempDirName(t *testing.T) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= utf8.RuneSelf:
			if unicode.IsLetter(r) || unicode.IsNumber(r) {
				return r
			}
			return -1
		case '0' <= r && r <= '9', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', strings.ContainsRune("!#$%&()+,-.=@^_{}~ ", r):
			return r
		}
		return -1
	}, t.Name())
}

func lbPID(t *testing.T, b *testbed.Bed, lb string) int {
	t.Helper()
	pid, ok := b.PID(lb, "l4lb")
	if !ok {
		t.Fatalf("%s: l4lb not running", lb)
	}
	return pid
}

// waitWeb waits until both nodes have n healthy backends on web.
func waitWeb(t *testing.T, b *testbed.Bed, n int, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if !testbed.Eventually(ctx, func() bool {
		for _, lb := range testbed.LBNodes {
			v := lbStatus(t, b, lb)
			up := 0
			for _, vip := range v.VIPs {
				if vip.Name == "web" {
					for _, be := range vip.Backends {
						if be.Healthy && be.Weight > 0 {
							up++
						}
					}
				}
			}
			if up != n {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("web does not have %d healthy backends on both nodes after %s", n, timeout)
	}
}

// synFlood sends n TCP SYNs to VIP4:80 from the client namespace, from spoofed sources in
// 198.51.100.128/25 with changing ports, through an AF_PACKET socket on the client's link.
func synFlood(b *testbed.Bed, n int) error {
	ctx := context.Background()
	macOf := func(node, dev string) (net.HardwareAddr, error) {
		out, err := b.Output(ctx, node, "cat", "/sys/class/net/"+dev+"/address")
		if err != nil {
			return nil, err
		}
		return net.ParseMAC(strings.TrimSpace(out))
	}
	dst, err := macOf("router", "rc")
	if err != nil {
		return err
	}
	src, err := macOf("client", "c0")
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(b.NS("client"))
	if err != nil {
		return err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return err
	}
	fd, serr := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	ifi, ierr := net.InterfaceByName("c0")
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", err))
	}
	if serr != nil {
		return serr
	}
	defer unix.Close(fd)
	if ierr != nil {
		return ierr
	}
	sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: htons(unix.ETH_P_IP)}
	frame := make([]byte, 14+20+20)
	copy(frame[0:6], dst)
	copy(frame[6:12], src)
	binary.BigEndian.PutUint16(frame[12:], unix.ETH_P_IP)
	ip := frame[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], 40)
	copy(ip[16:20], net.ParseIP(testbed.VIP4).To4())
	tcp := frame[34:]
	binary.BigEndian.PutUint16(tcp[2:], 80)
	tcp[12], tcp[13] = 5<<4, 0x02
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	for i := 0; i < n; i++ {
		copy(ip[12:16], []byte{198, 51, 100, byte(128 + i%128)})
		binary.BigEndian.PutUint16(tcp[0:], uint16(1024+(i/128)%60000))
		binary.BigEndian.PutUint32(tcp[4:], uint32(i))
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], csum(ip, 0))
		tcp[16], tcp[17] = 0, 0
		pseudo := uint32(0)
		for j := 12; j < 20; j += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(ip[j:]))
		}
		pseudo += 6 + 20
		binary.BigEndian.PutUint16(tcp[16:], csum(tcp, pseudo))
		for {
			err := unix.Sendto(fd, frame, 0, sa)
			if err == nil {
				break
			}
			if !errors.Is(err, unix.ENOBUFS) && !errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("send: %w", err)
			}
			time.Sleep(50 * time.Microsecond)
		}
	}
	return nil
}

func csum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func lbStatus(t *testing.T, b *testbed.Bed, lb string) daemon.View {
	t.Helper()
	out, err := b.Output(context.Background(), lb, b.L4LB(), "status", "-o", "json")
	if err != nil {
		t.Fatalf("%s: l4lb status: %v", lb, err)
	}
	var v daemon.View
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%s: %v", lb, err)
	}
	return v
}
