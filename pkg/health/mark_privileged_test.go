package health

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
)

// envProbeHelper makes the test binary run one check and exit instead of running tests:
// the privileged test starts it inside its namespace with `ip netns exec`, so every
// socket of the check, the HTTP transport's dials included, is in the namespace.
const envProbeHelper = "L4LB_HEALTH_PROBE_HELPER"

type helperProbe struct {
	Config Config
	Probe  Probe
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(envProbeHelper); spec != "" {
		os.Exit(runProbeHelper(spec))
	}
	os.Exit(m.Run())
}

func runProbeHelper(spec string) int {
	var h helperProbe
	if err := json.Unmarshal([]byte(spec), &h); err != nil {
		fmt.Println("bad helper spec:", err)
		return 2
	}
	ch, err := New(h.Config.WithDefaults())
	if err != nil {
		fmt.Println(err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.Config.WithDefaults().Timeout)
	defer cancel()
	if err := ch.Check(ctx, h.Probe); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("healthy")
	return 0
}

// The probe's mark is on its packets, every one of them, for each protocol: inside a
// namespace an nftables output rule drops packets to the check's port unless they carry
// the mark. A probe with the mark is healthy; without it, or with another mark, it fails
// and the rule's counter shows it was the one that dropped them.
func TestPrivilegedProbeMark(t *testing.T) {
	testutil.RequireCommands(t, "ip", "nft")
	ns := testutil.NewNetNS(t, "health")
	// The VIPs a tunnel check dials live on the backend's lo; here the probe's own.
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
	ns.Run(t, "ip", "-6", "addr", "add", "2001:db8::1/128", "dev", "lo", "nodad")

	const mark uint32 = 0x8000002a // bit 31 set: the whole 32 bits reach the socket
	type server struct {
		name  string
		proto string // nft's: tcp or udp
		c     Config
		addr  netip.AddrPort
	}
	var servers []server
	if err := ns.Do(func() error {
		for _, a := range []struct{ name, addr string }{{"tcp ipv4", "192.0.2.1:0"}, {"tcp ipv6", "[2001:db8::1]:0"}} {
			ln, err := net.Listen("tcp", a.addr)
			if err != nil {
				return err
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			servers = append(servers, server{a.name, "tcp", Config{Type: "tcp"}, netip.MustParseAddrPort(ln.Addr().String())})
		}
		ln, err := net.Listen("tcp", "192.0.2.1:0")
		if err != nil {
			return err
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("be1 ready")) }))
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		t.Cleanup(srv.Close)
		servers = append(servers, server{"http", "tcp", Config{Type: "http", BodyMatch: "ready"}, netip.MustParseAddrPort(ln.Addr().String())})
		pc, err := net.ListenPacket("udp", "192.0.2.1:0")
		if err != nil {
			return err
		}
		t.Cleanup(func() { pc.Close() })
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte("be1:"), buf[:n]...), from)
			}
		}()
		servers = append(servers, server{"udp", "udp", Config{Type: "udp", Payload: "ping", Expect: "be1:ping"}, netip.MustParseAddrPort(pc.LocalAddr().String())})
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// One rule per check, so each one's counter tells who dropped what. Replies leave
	// from the check's port, not to it: the rule leaves them alone.
	var rules strings.Builder
	fmt.Fprintf(&rules, "table inet l4lb_health_test {\n\tchain out {\n\t\ttype filter hook output priority 0; policy accept;\n")
	for _, s := range servers {
		fmt.Fprintf(&rules, "\t\t%s dport %d meta mark != %#x counter drop\n", s.proto, s.addr.Port(), mark)
	}
	fmt.Fprintf(&rules, "\t}\n}\n")
	file := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "nft", "-f", file)
	dropped := func(port uint16) int {
		t.Helper()
		out := ns.Run(t, "nft", "list", "chain", "inet", "l4lb_health_test", "out")
		m := regexp.MustCompile(fmt.Sprintf(`dport %d .*counter packets (\d+)`, port)).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no counter for port %d in\n%s", port, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	probe := func(c Config, p Probe) (string, error) {
		c.Timeout = 500 * time.Millisecond
		spec, err := json.Marshal(helperProbe{Config: c, Probe: p})
		if err != nil {
			t.Fatal(err)
		}
		return ns.Output("env", envProbeHelper+"="+string(spec), exe)
	}
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			if out, err := probe(s.c, Probe{Addr: s.addr, Mark: mark}); err != nil {
				t.Fatalf("probe with mark %#x: %v: %s", mark, err, out)
			}
			if n := dropped(s.addr.Port()); n != 0 {
				t.Fatalf("marked probe: the rule dropped %d packets", n)
			}
			for _, m := range []uint32{0, 0x2a} {
				out, err := probe(s.c, Probe{Addr: s.addr, Mark: m})
				if err == nil || !strings.Contains(out, "unhealthy") {
					t.Errorf("probe with mark %#x: %v: %s, want unhealthy", m, err, out)
				}
				t.Logf("mark %#x: %s", m, strings.TrimSpace(out))
			}
			if n := dropped(s.addr.Port()); n == 0 {
				t.Error("unmarked probes failed, but not by the rule: its counter is 0")
			}
		})
	}
}
