package ipvs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	cipvs "github.com/cloudflare/ipvs"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/pkg/lb"
)

// l4lbBinary is $L4LB_BINARY (the kernel suite builds it on the host) or a fresh build.
func l4lbBinary(t *testing.T) string {
	if bin := os.Getenv("L4LB_BINARY"); bin != "" {
		return bin
	}
	testutil.RequireCommands(t, "go")
	bin := filepath.Join(t.TempDir(), "l4lb")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/l4lb/l4lb/cmd/l4lb").CombinedOutput(); err != nil {
		t.Fatalf("build l4lb: %v\n%s", err, out)
	}
	return bin
}

// TestPrivilegedIPVSDaemon runs the real l4lb binary with dataplane: ipvs: the config's
// VIPs (tunnel and masq) become IPVS services that spread over the backends, a failing
// health check takes a backend out, `l4lb status` prints the IPVS table, the services
// survive a stop, and `l4lb cleanup` removes them.
func TestPrivilegedIPVSDaemon(t *testing.T) {
	requireIPVS(t)
	bin := l4lbBinary(t)
	b := newBed(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "l4lb.yaml")
	cfg := fmt.Sprintf(`interfaces: [l0]
dataplane: ipvs
bpffs: %[1]s/lock
state_file: %[1]s/state.json
encap:
  source4: 192.0.2.192/26
  source6: 2001:db8:e::/64
ipvs:
  state_file: %[1]s/ipvs.json
  resync_interval: 500ms
admin:
  listen: 127.0.0.1:9100
vips:
  - name: tunnel4
    address: %[2]s
    port: 80
    protocol: tcp
    health: {type: tcp, interval: 200ms, timeout: 150ms, rise: 1, fall: 2}
    backends: [{address: %[3]s}, {address: %[4]s}, {address: %[5]s}]
  - name: masq6
    address: %[6]s
    port: 80
    protocol: udp
    forward: masq
    backends: [{address: %[7]s}, {address: %[8]s}, {address: %[9]s}]
`, dir, vipTunnel4, b.be4[0], b.be4[1], b.be4[2], vipMasq6, b.be6[0], b.be6[1], b.be6[2])
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs, err := os.Create(filepath.Join(dir, "l4lb.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(logs.Name())
			t.Logf("l4lb log:\n%s", out)
		}
	})
	// The admin API listens in the LB's namespace: dial there.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := b.lbNS.Do(func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}}
	state := func() (daemon.View, error) {
		var v daemon.View
		resp, err := hc.Get("http://127.0.0.1:9100/v1/state")
		if err != nil {
			return v, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return v, json.Unmarshal(body, &v)
	}
	cmd := exec.Command("ip", "netns", "exec", b.lbNS.Name(), bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the daemon has exited, waitErr says how.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if v, err := state(); err == nil && v.Ready && len(v.IPVS) == 2 {
			break
		}
		select {
		case <-exited:
			t.Fatalf("l4lb run exited: %v", waitErr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("daemon not ready with two ipvs services within 30s")
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "exec", b.lbNS.Name(), bin, "cleanup", "--config", cfgPath).CombinedOutput(); err != nil {
			t.Logf("l4lb cleanup: %v: %s", err, out)
		}
	})

	tunnel := lb.VIPKey{Addr: netip.MustParseAddr(vipTunnel4), Port: 80, Proto: lb.ProtoTCP}
	masq := lb.VIPKey{Addr: netip.MustParseAddr(vipMasq6), Port: 80, Proto: lb.ProtoUDP}
	for _, k := range []lb.VIPKey{tunnel, masq} {
		if got := spread(t, b.client, k, 30); len(got) != 3 {
			t.Errorf("%s through the daemon: answers %v, want all three backends", k, got)
		}
	}
	out, err := b.lbNS.Output(bin, "status")
	if err != nil {
		t.Fatalf("l4lb status: %v: %s", err, out)
	}
	t.Logf("l4lb status:\n%s", out)
	for _, want := range []string{"mode ipvs", "TCP  " + vipTunnel4 + ":80", "mh (mh-fallback,mh-port)",
		"-> " + b.be4[1].String() + ":80", "Tunnel 1", "UDP  [" + vipMasq6 + "]:80", "Masq 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("l4lb status lacks %q", want)
		}
	}

	// be2 stops answering its health check (TCP to port 80 from the LB's 192.0.2.33; the
	// clients' traffic still flows): it gets weight 0.
	b.backends[1].IPBatch(t, "route add blackhole 192.0.2.33/32")
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, err := state()
		if err != nil {
			t.Fatal(err)
		}
		down := false
		for _, s := range v.IPVS {
			for _, d := range s.Dests {
				if s.Address == vipTunnel4+":80" && d.Address == b.be4[1].String()+":80" && d.Weight == 0 {
					down = true
				}
			}
		}
		if down {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("be2's health check failed but its ipvs weight stayed: %+v", v.IPVS)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := spread(t, b.client, tunnel, 20); got["be2"] != 0 || len(got) != 2 {
		t.Errorf("be2 is down: answers %v, want be1 and be3", got)
	}
	b.backends[1].IPBatch(t, "route del blackhole 192.0.2.33/32")

	// A stop keeps the services (forwarding continues); cleanup removes them.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-exited
	if waitErr != nil {
		t.Errorf("l4lb run after SIGTERM: %v", waitErr)
	}
	if got := spread(t, b.client, tunnel, 10); len(got) == 0 {
		t.Errorf("nothing answered after the daemon stopped: %v", got)
	}
	if out, err := exec.Command("ip", "netns", "exec", b.lbNS.Name(), bin, "cleanup", "--config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("l4lb cleanup: %v: %s", err, out)
	} else {
		t.Logf("l4lb cleanup:\n%s", out)
	}
	var left []cipvs.ServiceExtended
	if err := b.lbNS.Do(func() error {
		c, err := cipvs.New()
		if err != nil {
			return err
		}
		left, err = c.Services()
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("services left after cleanup: %+v", left)
	}
	if _, err := b.lbNS.Output("ip", "link", "show", "l4lb-ipvs"); err == nil {
		t.Errorf("the vip device is left after cleanup")
	}
}
