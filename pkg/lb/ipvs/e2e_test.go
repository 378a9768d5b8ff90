package ipvs_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cipvs "github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/ipvs"
)

// requireIPVS skips on a kernel without IPVS (this machine's), naming the VM target that
// runs the test, and fails there if IPVS is missing.
func requireIPVS(t *testing.T) {
	t.Helper()
	testutil.RequirePrivileged(t)
	ok, why := ipvs.Available()
	testutil.RequireKernelFeature(t, "no IPVS", ok, why)
	testutil.RequireCommands(t, "ip")
}

const (
	vipTunnel4 = "203.0.113.10"
	vipMasq4   = "203.0.113.11"
	vipTunnel6 = "2001:db8:f::10"
	vipMasq6   = "2001:db8:f::11"
	vipReload  = "203.0.113.12"
	vip4in6    = "203.0.113.13"
	vipForeign = "203.0.113.99"
)

// bed is the topology: client -- lb (IPVS) -- three backends, each on its own link.
// Backends route everything back through the lb, which forwards tunnel mode's direct
// replies (source: the VIP) and un-NATs masq mode's.
type bed struct {
	client, lbNS *testutil.NetNS
	backends     []*testutil.NetNS
	be4, be6     []netip.Addr
}

func newBed(t *testing.T) *bed {
	// Few processes: in the VM under emulation each costs about a second.
	b := &bed{client: testutil.NewNetNS(t, "client"), lbNS: testutil.NewNetNS(t, "lb")}
	b.lbNS.IPBatch(t,
		"link add l0 type veth peer name c0 netns "+b.client.Name(),
		"link set l0 up",
		"addr add 198.51.100.1/24 dev l0",
		"addr add 2001:db8:c::1/64 dev l0 nodad")
	b.client.IPBatch(t,
		"link set c0 up",
		"addr add 198.51.100.2/24 dev c0",
		"addr add 2001:db8:c::2/64 dev c0 nodad",
		"route add default via 198.51.100.1",
		"route add ::/0 via 2001:db8:c::1")
	// Forwarding for the replies; accept_local because tunnel mode's replies come from
	// the VIP, which is local here too.
	lbSys := []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.all.accept_local=1"}
	var lbCmds []string
	for i := 1; i <= 3; i++ {
		be := testutil.NewNetNS(t, fmt.Sprintf("be%d", i))
		lbIf := fmt.Sprintf("b%d", i)
		a4 := netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", 16*i+2))
		a6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:%d::2", i))
		// Encapsulation adds 20 or 40 bytes: MTU 1600 on the links.
		lbCmds = append(lbCmds,
			"link add "+lbIf+" mtu 1600 type veth peer name e0 mtu 1600 netns "+be.Name(),
			"link set "+lbIf+" up",
			fmt.Sprintf("addr add 192.0.2.%d/28 dev %s", 16*i+1, lbIf),
			fmt.Sprintf("addr add 2001:db8:%d::1/64 dev %s nodad", i, lbIf))
		lbSys = append(lbSys, "net.ipv4.conf."+lbIf+".accept_local=1", "net.ipv4.conf."+lbIf+".rp_filter=0")
		b.lbNS.IPBatch(t, lbCmds[len(lbCmds)-4:]...)
		be.IPBatch(t,
			"link set e0 up",
			"addr add "+a4.String()+"/28 dev e0",
			"addr add "+a6.String()+"/64 dev e0 nodad",
			fmt.Sprintf("route add default via 192.0.2.%d", 16*i+1),
			fmt.Sprintf("route add ::/0 via 2001:db8:%d::1", i),
			// Tunnel mode: the VIPs are local.
			"addr add "+vipTunnel4+"/32 dev lo",
			"addr add "+vipReload+"/32 dev lo",
			"addr add "+vip4in6+"/32 dev lo",
			"addr add "+vipTunnel6+"/128 dev lo nodad")
		// Tunnel mode: the kernel's own tunnel devices decapsulate.
		testutil.KernelTunnelBackend(t, be)
		name := fmt.Sprintf("be%d", i)
		serve(t, be, name, []string{vipTunnel4, vipReload, vip4in6, a4.String(), vipTunnel6, a6.String()})
		b.backends = append(b.backends, be)
		b.be4, b.be6 = append(b.be4, a4), append(b.be6, a6)
	}
	b.lbNS.Sysctl(t, lbSys...)
	return b
}

// serve answers on port 80 of the backend with its name: TCP (one line in, the name
// out) on every address, UDP (any datagram in, the name out) on each of addrs, so
// replies leave from the address the request went to.
func serve(t *testing.T, ns *testutil.NetNS, name string, addrs []string) {
	var closers []io.Closer
	err := ns.Do(func() error {
		ln, err := net.Listen("tcp", ":80")
		if err != nil {
			return err
		}
		closers = append(closers, ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
						return
					}
					_, _ = io.WriteString(c, name+"\n")
				}()
			}
		}()
		for _, a := range addrs {
			pc, err := net.ListenPacket("udp", net.JoinHostPort(a, "80"))
			if err != nil {
				return err
			}
			closers = append(closers, pc)
			go func() {
				buf := make([]byte, 1500)
				for {
					_, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					_, _ = pc.WriteTo([]byte(name+"\n"), from)
				}
			}()
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	if err != nil {
		t.Fatalf("serve on %s: %v", name, err)
	}
}

// request makes one request from the client on a new connection (TCP) or a new socket
// (UDP, so a new source port) and returns who answered.
// udpPort gives each UDP request a source port of its own, below the kernel's ephemeral
// range: IPVS keeps a UDP connection for minutes, and a request from a port used before
// would rightly go to that connection's backend, drained or not.
var udpPort atomic.Uint32

func request(client *testutil.NetNS, k lb.VIPKey) (string, error) {
	var answer string
	err := client.Do(func() error {
		addr := net.JoinHostPort(k.Addr.String(), fmt.Sprint(k.Port))
		d := net.Dialer{Timeout: 3 * time.Second}
		if k.Proto == lb.ProtoUDP {
			d.LocalAddr = &net.UDPAddr{Port: int(20000 + udpPort.Add(1)%12000)}
		}
		c, err := d.Dial(k.Proto.String(), addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, "GET\n"); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("%s %s: read: %w", k.Proto, addr, err)
		}
		answer = strings.TrimSpace(line)
		return nil
	})
	return answer, err
}

// spread makes n requests and counts the answers.
func spread(t *testing.T, client *testutil.NetNS, k lb.VIPKey, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			a, err := request(client, k)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			got[a]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("%s: %v", k, err)
	}
	return got
}

func service(name string, key string, proto lb.Proto, flags lb.VIPFlags, backends ...netip.Addr) lb.Service {
	sv := lb.Service{Name: name, Key: lb.VIPKey{Addr: netip.MustParseAddr(key), Port: 80, Proto: proto}, Flags: flags}
	for _, b := range backends {
		sv.Backends = append(sv.Backends, lb.ServiceBackend{Addr: b, Weight: 1})
	}
	return sv
}

// TestPrivilegedIPVS runs real TCP and UDP, IPv4 and IPv6, through IPVS in tunnel mode
// (to backends that decapsulate with the kernel's ipip / ip6tnl devices) and in masq
// mode, driven by the controller: health failure and drain take a backend out of new
// connections, a service removed behind l4lb's back comes back, a service that is not
// l4lb's is never touched, a reload that replaces a backend loses no request, a
// restarted data plane reads back what it made, and cleanup removes everything it made.
func TestPrivilegedIPVS(t *testing.T) {
	requireIPVS(t)
	b := newBed(t)
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	state := t.TempDir() + "/ipvs.json"
	var dp *ipvs.Dataplane
	var foreign cipvs.Client
	if err := b.lbNS.Do(func() error {
		var err error
		if dp, err = ipvs.New(ipvs.Options{StateFile: state, Device: "l4lb-ipvs", Resync: 200 * time.Millisecond, Logger: logger}); err != nil {
			return err
		}
		foreign, err = cipvs.New()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	if _, err := dp.Attach(context.Background(), []string{"l0"}); err != nil {
		t.Fatal(err)
	}
	// A service someone else made, on an address l4lb's device does not hold.
	fsvc := cipvs.Service{Address: netip.MustParseAddr(vipForeign), Port: 80, Protocol: cipvs.TCP, Family: cipvs.INET,
		Scheduler: "rr", Netmask: netmask.MaskFrom(32, 32)}
	if err := foreign.CreateService(fsvc); err != nil {
		t.Fatalf("create the foreign service: %v", err)
	}

	var spec lb.Spec
	for _, p := range []lb.Proto{lb.ProtoTCP, lb.ProtoUDP} {
		spec.Services = append(spec.Services,
			service("t4-"+p.String(), vipTunnel4, p, 0, b.be4...),
			service("m4-"+p.String(), vipMasq4, p, lb.FlagForwardMasq, b.be4...),
			service("t6-"+p.String(), vipTunnel6, p, 0, b.be6...),
			service("m6-"+p.String(), vipMasq6, p, lb.FlagForwardMasq, b.be6...),
		)
	}
	// 4in6: an IPv4 VIP tunnelled to IPv6 backends (IPVS allows mixed families in tunnel
	// mode only).
	spec.Services = append(spec.Services, service("x46-tcp", vip4in6, lb.ProtoTCP, 0, b.be6...))
	ctl := lb.NewController(logger, dp, dp.Info().MaxBackendID, nil, nil)
	ctl.SetSpec(spec)
	apply := func() {
		t.Helper()
		if res := ctl.Apply(context.Background()); res.Err != nil {
			t.Fatalf("apply: %v", res.Err)
		}
	}
	apply()
	out, _ := b.lbNS.Output("ipvsadm", "-Ln")
	t.Logf("ipvs table:\n%s", out)

	const n = 36
	for _, sv := range spec.Services {
		got := spread(t, b.client, sv.Key, n)
		t.Logf("%s (%s): %v", sv.Name, sv.Key, got)
		if len(got) != 3 {
			t.Errorf("%s: answers from %v, want all three backends", sv.Name, got)
		}
	}
	// IPVS sums its per-CPU counters every 2 seconds (its rate estimator).
	var c lb.Counters
	for deadline := time.Now().Add(8 * time.Second); ; {
		var err error
		if c, err = dp.Counters(); err != nil {
			t.Fatal(err)
		}
		low := false
		for _, sv := range spec.Services {
			if vc := c.VIPs[sv.Key]; vc.NewFlows < n || vc.Packets < n || vc.Bytes == 0 {
				low = true
			}
		}
		if !low {
			break
		}
		if time.Now().After(deadline) {
			for _, sv := range spec.Services {
				t.Errorf("%s: counters %+v, want at least %d connections and packets", sv.Name, c.VIPs[sv.Key], n)
			}
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	var perBackend uint64
	for _, bc := range c.Backends {
		perBackend += bc.NewFlows
	}
	if len(c.Backends) != 6 || perBackend != c.Global["ipvs_connections"] {
		t.Errorf("backend counters %v (sum of connections %d), want 6 backends summing to the services' %d", c.Backends, perBackend, c.Global["ipvs_connections"])
	}
	// Per VIP: each service's destinations count that service's connections only.
	for _, sv := range spec.Services {
		var sum uint64
		for _, bc := range c.VIPBackends[sv.Key] {
			sum += bc.NewFlows
		}
		if sum != c.VIPs[sv.Key].NewFlows {
			t.Errorf("%s: per-VIP backend counters %v sum to %d connections, want the service's %d", sv.Name, c.VIPBackends[sv.Key], sum, c.VIPs[sv.Key].NewFlows)
		}
	}

	// Health failure: be2 of the tunnel TCP VIP gets no new connections.
	k := func(vip string, i int) lb.BackendKey {
		a := b.be4[i]
		if strings.HasSuffix(vip, "6-tcp") || strings.HasSuffix(vip, "6-udp") {
			a = b.be6[i]
		}
		return lb.BackendKey{VIP: vip, Backend: a}
	}
	ctl.SetHealth(k("t4-tcp", 1), false)
	apply()
	if got := spread(t, b.client, spec.Services[0].Key, n); got["be2"] != 0 || len(got) != 2 {
		t.Errorf("be2 is down: answers %v, want be1 and be3 only", got)
	}
	// Drain: be3 of the masq IPv6 UDP VIP.
	if _, _, err := ctl.UpdateOverride(k("m6-udp", 2), func(o *lb.Override) { o.Drain = true }, nil); err != nil {
		t.Fatal(err)
	}
	apply()
	m6udp := spec.Services[7].Key
	if got := spread(t, b.client, m6udp, n); got["be3"] != 0 || len(got) != 2 {
		t.Errorf("be3 is drained: answers %v, want be1 and be2 only", got)
	}
	dests, err := foreign.Destinations(cipvs.Service{Address: m6udp.Addr, Port: 80, Protocol: cipvs.UDP, Family: cipvs.INET6})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dests {
		if want := uint32(map[bool]uint32{true: 0, false: 1}[d.Address == b.be6[2]]); d.Weight != want || d.FwdMethod != cipvs.Masquerade {
			t.Errorf("%s destination %s: weight %d %s, want %d masq", m6udp, d.Address, d.Weight, d.FwdMethod, want)
		}
	}

	// A reload that replaces a backend, under load: no request is lost, only the kept and
	// the new backend answer after it, and the old one stays (weight 0) while IPVS still
	// has connections to it.
	r1 := service("r4", vipReload, lb.ProtoTCP, 0, b.be4[0], b.be4[1])
	ctl.SetSpec(lb.Spec{Services: append(slices.Clone(spec.Services), r1)})
	apply()
	load := testutil.StartLoad(4, 20*time.Millisecond, func() (string, error) { return request(b.client, r1.Key) })
	time.Sleep(1500 * time.Millisecond)
	changeAt := time.Now()
	r2 := service("r4", vipReload, lb.ProtoTCP, 0, b.be4[0], b.be4[2])
	spec.Services = append(spec.Services, r2)
	ctl.SetSpec(spec)
	apply()
	appliedAt := time.Now()
	time.Sleep(1500 * time.Millisecond)
	reqs := load.Stop()
	rdests, err := dp.Destinations(r2.Key)
	if err != nil {
		t.Fatal(err)
	}
	byAddr := map[string]ipvs.DestStatus{}
	for _, d := range rdests {
		byAddr[d.Address] = d
	}
	old, kept, added := byAddr[b.be4[1].String()+":80"], byAddr[b.be4[0].String()+":80"], byAddr[b.be4[2].String()+":80"]
	if !old.Leaving || old.Weight != 0 || old.InactiveConns+old.ActiveConns == 0 || kept.Weight != 1 || added.Weight != 1 || added.Leaving {
		t.Errorf("after the change: be2 %+v (want leaving with weight 0 and connections), be1 %+v, be3 %+v (want weight 1)", old, kept, added)
	}
	testutil.CheckReplaced(t, reqs, changeAt, appliedAt, "be1", "be2", "be3", func() string {
		out, _ := b.lbNS.Output("ipvsadm", "-Ln")
		return "ipvs table:\n" + out
	})

	// Removed behind l4lb's back: Watch notices, the next pass restores it.
	drift := make(chan struct{}, 1)
	dp.SetOnDrift(func() {
		select {
		case drift <- struct{}{}:
		default:
		}
	})
	dp.Watch(context.Background())
	if err := foreign.RemoveService(cipvs.Service{Address: netip.MustParseAddr(vipTunnel4), Port: 80, Protocol: cipvs.TCP, Family: cipvs.INET}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-drift:
	case <-time.After(10 * time.Second):
		t.Fatal("the removed service was not noticed")
	}
	apply()
	if got := spread(t, b.client, spec.Services[0].Key, 12); got["be2"] != 0 || len(got) != 2 {
		t.Errorf("after the restore: answers %v, want be1 and be3", got)
	}
	dp.StopWatch()

	// Not l4lb's: it refuses to take the foreign service over.
	err = dp.SetVIP(lb.VIP{Key: lb.VIPKey{Addr: netip.MustParseAddr(vipForeign), Port: 80, Proto: lb.ProtoTCP},
		Backends: []lb.Backend{{ID: 99, Addr: b.be4[0], Weight: 1}}})
	if !errors.Is(err, ipvs.ErrNotOurs) {
		t.Errorf("SetVIP over a foreign service: %v, want %v", err, ipvs.ErrNotOurs)
	}
	// A restarted data plane reads its state back: same services, same ids.
	before, err := dp.Programmed()
	if err != nil {
		t.Fatal(err)
	}
	var again *ipvs.Dataplane
	if err := b.lbNS.Do(func() error {
		again, err = ipvs.New(ipvs.Options{StateFile: state, Device: "l4lb-ipvs"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	after, err := again.Programmed()
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) || len(after.VIPs) != 10 {
		t.Errorf("after a restart the data plane holds %v, want %v", after, before)
	}

	// Cleanup: l4lb's services, device and state go; the foreign service stays.
	removed, err := again.Cleanup()
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	t.Logf("cleanup removed %v", removed)
	svcs, err := foreign.Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].Address != fsvc.Address {
		t.Errorf("after cleanup ipvs holds %v, want only the foreign service", svcs)
	}
	if out, err := b.lbNS.Output("ip", "link", "show", "l4lb-ipvs"); err == nil {
		t.Errorf("the vip device is still there: %s", out)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the state file is still there: %v", err)
	}
}
