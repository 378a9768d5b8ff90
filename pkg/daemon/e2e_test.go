package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/daemon"
)

const vip = "203.0.113.10"

// lbEncapSource is the LB's encap.source4: the backends' decap accepts tunnels from it only.
const lbEncapSource = "192.0.2.192/26"

// bed is the test topology: a client, a router, one LB running the real l4lb binary, and
// three backends running `l4lb decap`, an HTTP server that names itself and a TCP echo.
type bed struct {
	t       *testing.T
	bin     string
	dir     string
	client  *testutil.NetNS
	router  *testutil.NetNS
	lb      *testutil.NetNS
	be      []*testutil.NetNS
	servers []*backendServer
	cfgPath string
	daemon  *exec.Cmd
	logs    *os.File
}

type backendServer struct {
	name       string
	mu         sync.Mutex
	http, echo net.Listener
}

// envBinary names a prebuilt l4lb to test instead of building one (the kernel VMs of
// internal/vmtest run this test where no go toolchain is at hand).
const envBinary = "L4LB_BINARY"

func buildBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv(envBinary); bin != "" {
		return bin
	}
	testutil.RequireCommands(t, "go")
	bin := filepath.Join(t.TempDir(), "l4lb")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/l4lb/l4lb/cmd/l4lb").CombinedOutput()
	if err != nil {
		t.Fatalf("build l4lb: %v\n%s", err, out)
	}
	return bin
}

func newBed(t *testing.T) *bed {
	testutil.RequireCommands(t, "ip", "ethtool", "sysctl")
	b := &bed{t: t, bin: buildBinary(t), dir: t.TempDir()}
	b.client = testutil.NewNetNS(t, "client")
	b.router = testutil.NewNetNS(t, "router")
	b.lb = testutil.NewNetNS(t, "lb")
	all := []*testutil.NetNS{b.client, b.router, b.lb}
	for i := 1; i <= 3; i++ {
		ns := testutil.NewNetNS(t, fmt.Sprintf("be%d", i))
		b.be = append(b.be, ns)
		all = append(all, ns)
	}
	for _, ns := range all {
		ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	}
	testutil.Veth(t, b.client, "c0", b.router, "rc")
	testutil.Veth(t, b.router, "rl", b.lb, "l0")
	b.client.Run(t, "ip", "addr", "add", "198.51.100.2/24", "dev", "c0")
	b.client.Run(t, "ip", "route", "add", "default", "via", "198.51.100.1")
	b.router.Run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "rc")
	b.router.Run(t, "ip", "addr", "add", "192.0.2.1/26", "dev", "rl")
	b.router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	b.router.Run(t, "ip", "route", "add", vip+"/32", "via", "192.0.2.2")
	b.router.Run(t, "ip", "link", "set", "rl", "mtu", "1600")
	b.lb.Run(t, "ip", "addr", "add", "192.0.2.2/26", "dev", "l0")
	b.lb.Run(t, "ip", "link", "set", "l0", "mtu", "1600")
	b.lb.Run(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	// XDP_TX from the LB is delivered only if the router's end runs an XDP program.
	b.router.Start(t, b.bin, "decap", "--iface", "rl", "--vip", "192.0.2.255", "--allow-from", lbEncapSource)
	for i, ns := range b.be {
		rIf, bIf := fmt.Sprintf("rb%d", i+1), "b0"
		testutil.Veth(t, b.router, rIf, ns, bIf)
		b.router.Run(t, "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/28", 16*(i+1)+1), "dev", rIf)
		b.router.Run(t, "ip", "link", "set", rIf, "mtu", "1600")
		ns.Run(t, "ip", "addr", "add", fmt.Sprintf("203.0.113.%d/28", 16*(i+1)+2), "dev", bIf)
		ns.Run(t, "ip", "link", "set", bIf, "mtu", "1600")
		ns.Run(t, "ip", "addr", "add", vip+"/32", "dev", "lo")
		ns.Run(t, "ip", "route", "add", "default", "via", fmt.Sprintf("203.0.113.%d", 16*(i+1)+1))
		// Only the LB's tunnels are decapsulated (encap.source4 below).
		ns.Start(t, b.bin, "decap", "--iface", bIf, "--vip", vip, "--allow-from", lbEncapSource)
		s := &backendServer{name: fmt.Sprintf("be%d", i+1)}
		s.start(t, ns)
		b.servers = append(b.servers, s)
	}
	// A private bpffs for the LB's pins (ip netns exec hides /sys/fs/bpf).
	fs := filepath.Join(b.dir, "bpffs")
	if err := os.MkdirAll(fs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", fs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		// Detach and unpin whatever the daemon left, then unmount.
		if out, err := exec.Command("ip", "netns", "exec", b.lb.Name(), b.bin, "cleanup", "--config", b.cfgPath).CombinedOutput(); err != nil {
			t.Logf("l4lb cleanup: %v: %s", err, out)
		}
		if err := unix.Unmount(fs, 0); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	tok := filepath.Join(b.dir, "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cfgPath = filepath.Join(b.dir, "l4lb.yaml")
	b.writeConfig(t, fmt.Sprintf(`  - name: web
    address: %[1]s
    port: 80
    protocol: tcp
    health: {type: http, interval: 100ms, timeout: 100ms, rise: 2, fall: 2}
    backends:
      - address: 203.0.113.18
      - address: 203.0.113.34
      - address: 203.0.113.50
  - name: echo
    address: %[1]s
    port: 7
    protocol: tcp
    health: {type: tcp, interval: 100ms, timeout: 100ms}
    backends:
      - address: 203.0.113.18
      - address: 203.0.113.34
      - address: 203.0.113.50
`, vip))
	var err error
	b.logs, err = os.Create(filepath.Join(b.dir, "l4lb.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(b.logs.Name())
			t.Logf("l4lb log:\n%s", out)
		}
	})
	return b
}

// writeConfig writes the daemon's config file: the bed's fixed settings, then vips (the
// YAML list under "vips:"). A running daemon reads it on reload.
func (b *bed) writeConfig(t testing.TB, vips string) {
	t.Helper()
	cfg := fmt.Sprintf(`interfaces: [l0]
bpffs: %s/l4lb
state_file: %s/state.json
encap:
  source4: 192.0.2.192/26
xdp:
  mtu: 1600
admin:
  listen: 127.0.0.1:9100
  token_file: %s
vips:
%s`, filepath.Join(b.dir, "bpffs"), b.dir, filepath.Join(b.dir, "token"), vips)
	if err := os.WriteFile(b.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *backendServer) start(t *testing.T, ns *testutil.NetNS) {
	t.Helper()
	s.startHTTP(t, ns)
	if err := ns.Do(func() error {
		var err error
		s.echo, err = net.Listen("tcp4", ":7")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	echo := s.echo
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
}

// startHTTP listens on every address: the VIP for clients, the backend's own for health
// checks.
func (s *backendServer) startHTTP(t *testing.T, ns *testutil.NetNS) {
	t.Helper()
	if err := ns.Do(func() error {
		var err error
		s.http, err = net.Listen("tcp4", ":80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ln := s.http
	t.Cleanup(func() { ln.Close() })
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, s.name) }))
}

func (b *bed) startDaemon() {
	b.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", b.lb.Name(), b.bin, "run", "--config", b.cfgPath)
	cmd.Stdout, cmd.Stderr = b.logs, b.logs
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.daemon = cmd
	b.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if code, _ := b.admin("GET", "/readyz", ""); code == 200 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatal("daemon not ready within 10s")
}

func (b *bed) stopDaemon(sig syscall.Signal) {
	b.t.Helper()
	if err := b.daemon.Process.Signal(sig); err != nil {
		b.t.Fatal(err)
	}
	b.daemon.Wait()
}

// admin calls the daemon's API from inside the LB's namespace.
// adminNoToken calls the admin API without the bearer token.
func (b *bed) adminNoToken(method, path string) (int, string) { return b.call(method, path, "", false) }

func (b *bed) admin(method, path, body string) (int, string) { return b.call(method, path, body, true) }

func (b *bed) call(method, path, body string, token bool) (int, string) {
	var code int
	var out []byte
	// The transport dials from its own goroutine: dial inside the namespace explicitly.
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := b.lb.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	req, _ := http.NewRequest(method, "http://127.0.0.1:9100"+path, strings.NewReader(body))
	if token {
		req.Header.Set("Authorization", "Bearer s3cret")
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second, Transport: tr}).Do(req)
	if err == nil {
		defer resp.Body.Close()
		code = resp.StatusCode
		out, err = io.ReadAll(resp.Body)
	}
	if err != nil {
		return 0, err.Error()
	}
	return code, string(out)
}

func (b *bed) state() daemon.View {
	b.t.Helper()
	code, out := b.admin("GET", "/v1/state", "")
	var v daemon.View
	if code != 200 || json.Unmarshal([]byte(out), &v) != nil {
		b.t.Fatalf("state: %d %s", code, out)
	}
	return v
}

// dial opens a TCP connection to the VIP from the client namespace.
func (b *bed) dial(port int) (net.Conn, error) {
	var c net.Conn
	err := b.client.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", vip, port), 2*time.Second)
		return err
	})
	return c, err
}

// get sends one HTTP request on a new connection and returns the backend's name.
func (b *bed) get() (string, error) {
	c, err := b.dial(80)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return getOn(c)
}

func getOn(c net.Conn) (string, error) {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

func (b *bed) spread(t *testing.T, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := 0; i < n; i++ {
		name, err := b.get()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got[name]++
	}
	return got
}

func TestPrivilegedDaemon(t *testing.T) {
	b := newBed(t)
	b.startDaemon()

	t.Run("traffic spreads over three backends", func(t *testing.T) {
		got := b.spread(t, 90)
		t.Logf("90 requests: %v", got)
		for _, s := range b.servers {
			if got[s.name] < 10 {
				t.Errorf("%s got %d of 90 requests", s.name, got[s.name])
			}
		}
	})

	t.Run("a failed backend gets no new connections", func(t *testing.T) {
		stopped := time.Now()
		b.servers[1].http.Close()
		// fall (2) x interval (100ms) + timeout, then the apply.
		var took time.Duration
		for time.Since(stopped) < 5*time.Second {
			v := b.state()
			if !v.VIPs[1].Backends[1].Healthy && v.VIPs[1].Backends[1].Weight == 0 {
				took = time.Since(stopped)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if took == 0 {
			t.Fatalf("backend be2 still healthy 5s after its server stopped: %+v", b.state().VIPs)
		}
		t.Logf("server stop -> ring without be2: %s (fall x interval = 200ms; the last apply took %.2f ms)", took, b.state().LastApply.DurationMS)
		got := b.spread(t, 30)
		if got["be2"] != 0 {
			t.Errorf("be2 got %d new connections after it failed", got["be2"])
		}
		// Back up.
		b.servers[1].startHTTP(b.t, b.be[1]) // lives as long as the whole test
		deadline := time.Now().Add(5 * time.Second)
		for !b.state().VIPs[1].Backends[1].Healthy && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("drain keeps the open connection and avoids the backend", func(t *testing.T) {
		c, err := b.dial(80)
		if err != nil {
			out, _ := json.MarshalIndent(b.state(), "", " ")
			t.Fatalf("%v\n%s", err, out)
		}
		defer c.Close()
		first, err := getOn(c)
		if err != nil {
			t.Fatal(err)
		}
		addr := map[string]string{"be1": "203.0.113.18", "be2": "203.0.113.34", "be3": "203.0.113.50"}[first]
		if code, out := b.admin("POST", "/v1/vips/web/backends/"+addr+"/drain", ""); code != 200 {
			t.Fatalf("drain: %d %s", code, out)
		}
		// The API answers once the drain is recorded; wait until a pass applied it (a pass
		// takes ~30 ms here and ~200 ms in a TCG VM).
		drained := func() bool {
			for _, vv := range b.state().VIPs {
				for _, bv := range vv.Backends {
					if vv.Name == "web" && bv.Address == addr {
						return bv.Drained && bv.Weight == 0
					}
				}
			}
			return false
		}
		for deadline := time.Now().Add(5 * time.Second); !drained(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("drain of %s not applied within 5s", addr)
			}
		}
		got := b.spread(t, 30)
		if got[first] != 0 {
			t.Errorf("drained %s got %d new connections", first, got[first])
		}
		again, err := getOn(c)
		if err != nil || again != first {
			t.Errorf("open connection after the drain: %q, %v; want %s", again, err, first)
		}
		if code, out := b.admin("POST", "/v1/vips/web/backends/"+addr+"/undrain", ""); code != 200 {
			t.Fatalf("undrain: %d %s", code, out)
		}
		// Bad requests change nothing.
		if code, _ := b.admin("POST", "/v1/vips/nope/backends/"+addr+"/drain", ""); code != 404 {
			t.Errorf("unknown vip: %d", code)
		}
	})

	t.Run("restart and kill -9 keep 50 open connections", func(t *testing.T) {
		conns := make([]net.Conn, 50)
		for i := range conns {
			c, err := b.dial(7)
			if err != nil {
				t.Fatalf("conn %d: %v", i, err)
			}
			defer c.Close()
			conns[i] = c
		}
		exchange := func(when string) int {
			ok := 0
			for i, c := range conns {
				msg := fmt.Sprintf("%s %d\n", when, i)
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := io.WriteString(c, msg); err != nil {
					continue
				}
				buf := make([]byte, len(msg))
				if _, err := io.ReadFull(c, buf); err == nil && string(buf) == msg {
					ok++
				}
			}
			return ok
		}
		if n := exchange("before"); n != 50 {
			t.Fatalf("before the restart %d of 50 connections work", n)
		}
		b.stopDaemon(syscall.SIGTERM)
		down := exchange("down")
		b.startDaemon()
		after := exchange("after")
		t.Logf("open connections working: while the daemon was down %d/50, after the restart %d/50", down, after)
		if down != 50 || after != 50 {
			t.Errorf("connections lost across the restart: down %d, after %d", down, after)
		}

		b.daemon.Process.Kill()
		b.daemon.Wait()
		killed := exchange("killed")
		name, err := b.get()
		t.Logf("after kill -9: %d/50 open connections work; a new connection reached %q (%v)", killed, name, err)
		if killed != 50 || err != nil {
			t.Errorf("after kill -9: %d/50 connections, new connection error %v", killed, err)
		}
		b.startDaemon()
	})

	t.Run("trace of a SYN names its VIP, backend and tunnel, and writes nothing", func(t *testing.T) {
		// A SYN from a port no connection uses: the trace's backend is the ring's.
		code, out := b.admin("GET", "/v1/trace?proto=tcp&src=198.51.100.2:61000&dst="+vip+":80&flags=S", "")
		var tv daemon.TraceView
		if code != 200 || json.Unmarshal([]byte(out), &tv) != nil {
			t.Fatalf("trace: %d %s", code, out)
		}
		t.Logf("trace: %s", tv.Summary)
		if tv.Verdict != "tx" || tv.Reason != "tx_encap4" || tv.VIP != "web" || tv.Writes != "a new conntrack entry" ||
			!strings.HasPrefix(tv.Encap, "ipip 192.0.2.") || !strings.Contains(tv.Conntrack, "not looked up") {
			t.Errorf("trace of a SYN: %+v", tv)
		}
		// The same flow's ACK: no entry, since the trace wrote none.
		code, out = b.admin("GET", "/v1/trace?proto=tcp&src=198.51.100.2:61000&dst="+vip+":80", "")
		if code != 200 || json.Unmarshal([]byte(out), &tv) != nil || tv.Conntrack != "no entry" {
			t.Errorf("trace of the ACK after the SYN's trace: %d %s", code, out)
		}
		// Without the token: refused.
		if code, _ := b.adminNoToken("GET", "/v1/trace?proto=tcp&src=198.51.100.2:61000&dst="+vip+":80"); code != http.StatusUnauthorized {
			t.Errorf("trace without the token: %d, want 401", code)
		}
	})

	t.Run("a dropped packet shows in the recent drops with its reason", func(t *testing.T) {
		testutil.RequireCommands(t, "python3")
		// SYN+FIN to the VIP: impossible flags, dropped (drop_tcp_flags). A raw socket
		// sends the TCP header as given; the kernel adds the IP header.
		b.client.Run(t, "python3", "-c", `import socket,struct
s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_TCP)
s.sendto(struct.pack("!HHIIBBHHH",41000,80,1,0,5<<4,0x03,64240,0,0),("`+vip+`",0))`)
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, out := b.admin("GET", "/v1/monitor/recent", "")
			var rv struct {
				Drops []struct {
					Reason string `json:"reason"`
					Src    string `json:"src"`
					Dst    string `json:"dst"`
				} `json:"drops"`
			}
			if code == 200 && json.Unmarshal([]byte(out), &rv) == nil {
				for _, d := range rv.Drops {
					if d.Reason == "drop_tcp_flags" && d.Src == "198.51.100.2:41000" && d.Dst == vip+":80" {
						return
					}
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no drop_tcp_flags event from 198.51.100.2:41000 in the recent drops: %d %s", code, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("a bad reload is rejected and the running config stays", func(t *testing.T) {
		good, _ := os.ReadFile(b.cfgPath)
		defer os.WriteFile(b.cfgPath, good, 0o644)
		if err := os.WriteFile(b.cfgPath, append(good, []byte("bogus: 1\n")...), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out := b.admin("POST", "/v1/reload", "")
		if code != 400 || !strings.Contains(out, "bogus: unknown key") {
			t.Errorf("bad reload: %d %s", code, out)
		}
		v := b.state()
		if v.LastReload == nil || v.LastReload.OK || len(v.VIPs) != 2 {
			t.Errorf("after a rejected reload: %+v", v.LastReload)
		}
		if _, err := b.get(); err != nil {
			t.Errorf("traffic after a rejected reload: %v", err)
		}
		_, metrics := b.admin("GET", "/metrics", "")
		if !strings.Contains(metrics, `l4lb_reloads_total{result="rejected"} 1`) {
			t.Errorf("reload metric missing:\n%s", grep(metrics, "l4lb_reloads"))
		}
	})
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
