package socklb

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// The privileged tests run client sockets in a child process (this test binary again,
// with envClient set) that is started inside a test cgroup and a test network namespace.

const envClient = "L4LB_SOCKLB_CLIENT"

func TestMain(m *testing.M) {
	if spec := os.Getenv(envClient); spec != "" {
		os.Exit(clientMain(spec))
	}
	os.Exit(m.Run())
}

// clientSpec is what the child does: Count rounds of one socket each (or one socket for
// all rounds with Reuse), printing a clientResult per round.
type clientSpec struct {
	Proto  string `json:"proto"`  // tcp, udp, ping (an ICMP echo socket: SOCK_DGRAM, IPPROTO_ICMP/ICMPV6)
	Family int    `json:"family"` // socket family: 4 or 6
	Addr   string `json:"addr"`   // destination as the application names it
	Port   int    `json:"port"`
	// Connect a UDP socket (else sendto/recvfrom). TCP always connects.
	Connect bool `json:"connect"`
	Count   int  `json:"count"`
	// Hold: after the first round of a connected socket, keep it, wait for a line on
	// stdin, then send on it again and report; an unconnected socket waits for the line
	// between its sendto (reported as "sent") and its recvfrom.
	Hold bool `json:"hold"`
	// Mark is the sockets' SO_MARK (0: none).
	Mark uint32 `json:"mark,omitempty"`
}

type clientResult struct {
	Reply string `json:"reply"` // the backend's name
	Peer  string `json:"peer"`  // getpeername, or recvfrom's source
	Err   string `json:"err,omitempty"`
}

func clientMain(specJSON string) int {
	var s clientSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	enc := json.NewEncoder(os.Stdout)
	for i := 0; i < s.Count; i++ {
		fd, r := clientRound(s)
		enc.Encode(r)
		if s.Hold && i == 0 && fd >= 0 && (s.Proto == "tcp" || s.Connect) {
			bufio.NewReader(os.Stdin).ReadString('\n')
			enc.Encode(exchange(fd, s))
		}
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	return 0
}

func sockaddr(family int, addr string, port int) (unix.Sockaddr, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	if family == 4 {
		if !a.Is4() {
			return nil, fmt.Errorf("%s is not ipv4", a)
		}
		return &unix.SockaddrInet4{Addr: a.As4(), Port: port}, nil
	}
	return &unix.SockaddrInet6{Addr: a.As16(), Port: port}, nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(v.Addr), uint16(v.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(v.Addr), uint16(v.Port)).String()
	}
	return fmt.Sprintf("%v", sa)
}

func clientRound(s clientSpec) (int, clientResult) {
	if s.Proto == "ping" {
		return -1, pingRound(s)
	}
	af, typ := unix.AF_INET, unix.SOCK_STREAM
	if s.Family == 6 {
		af = unix.AF_INET6
	}
	if s.Proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fail := func(fd int, err error) (int, clientResult) {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, clientResult{Err: err.Error()}
	}
	fd, err := unix.Socket(af, typ, 0)
	if err != nil {
		return fail(-1, err)
	}
	if s.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(s.Mark)); err != nil {
			return fail(fd, fmt.Errorf("set mark: %w", err))
		}
	}
	tv := unix.Timeval{Sec: 2}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	sa, err := sockaddr(s.Family, s.Addr, s.Port)
	if err != nil {
		return fail(fd, err)
	}
	if s.Proto == "tcp" || s.Connect {
		if err := connectFD(fd, sa); err != nil {
			return fail(fd, fmt.Errorf("connect: %w", err))
		}
		r := exchange(fd, s)
		return fd, r
	}
	if err := unix.Sendto(fd, []byte("hi\n"), 0, sa); err != nil {
		return fail(fd, fmt.Errorf("sendto: %w", err))
	}
	if s.Hold {
		// Sent; the answer waits in the socket until the test says go.
		json.NewEncoder(os.Stdout).Encode(clientResult{Reply: "sent"})
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	buf := make([]byte, 256)
	n, from, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fail(fd, fmt.Errorf("recvfrom: %w", err))
	}
	return fd, clientResult{Reply: strings.TrimSpace(string(buf[:n])), Peer: sockaddrString(from)}
}

// pingRound connects an ICMP echo ("ping") socket to the address and port, then sends
// one echo request: Peer is getpeername, Reply the address the echo reply came from.
func pingRound(s clientSpec) clientResult {
	af, proto, echo := unix.AF_INET, unix.IPPROTO_ICMP, byte(8)
	if s.Family == 6 {
		af, proto, echo = unix.AF_INET6, unix.IPPROTO_ICMPV6, 128
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM, proto)
	if err != nil {
		return clientResult{Err: fmt.Sprintf("ping socket (net.ipv4.ping_group_range?): %v", err)}
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	sa, err := sockaddr(s.Family, s.Addr, s.Port)
	if err != nil {
		return clientResult{Err: err.Error()}
	}
	if err := connectFD(fd, sa); err != nil {
		return clientResult{Err: fmt.Sprintf("connect: %v", err)}
	}
	peer, err := unix.Getpeername(fd)
	if err != nil {
		return clientResult{Err: fmt.Sprintf("getpeername: %v", err)}
	}
	r := clientResult{Peer: sockaddrString(peer)}
	// Type, code, checksum, identifier (the kernel fills in these two), sequence 1.
	if _, err := unix.Write(fd, []byte{echo, 0, 0, 0, 0, 0, 0, 1, 'h', 'i'}); err != nil {
		r.Err = fmt.Sprintf("write: %v", err)
		return r
	}
	buf := make([]byte, 256)
	_, from, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		r.Err = fmt.Sprintf("recvfrom: %v", err)
		return r
	}
	ap, _ := netip.ParseAddrPort(sockaddrString(from))
	r.Reply = ap.Addr().String()
	return r
}

// exchange sends a line on a connected socket and reads the answer and getpeername.
func exchange(fd int, s clientSpec) clientResult {
	var r clientResult
	peer, err := unix.Getpeername(fd)
	if err != nil {
		return clientResult{Err: fmt.Sprintf("getpeername: %v", err)}
	}
	r.Peer = sockaddrString(peer)
	if _, err := unix.Write(fd, []byte("hi\n")); err != nil {
		r.Err = fmt.Sprintf("write: %v", err)
		return r
	}
	buf := make([]byte, 256)
	n, err := unix.Read(fd, buf)
	if err != nil {
		r.Err = fmt.Sprintf("read: %v", err)
		return r
	}
	r.Reply = strings.TrimSpace(strings.SplitN(string(buf[:n]), "\n", 2)[0])
	return r
}

// env is one test's world: a namespace with the backends on lo, a test cgroup, the XDP
// data plane's maps (loaded, never attached) and the socket LB over them.
type env struct {
	t      testing.TB
	ns     *testutil.NetNS
	cgroup string
	xdp    *xdp.Dataplane
	sock   *Dataplane
}

var backendAddrs = []netip.Addr{
	netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("198.51.100.3"),
	netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::3"),
}

// backendName is what a backend answers: "be-ADDR".
func backendName(a netip.Addr) string { return "be-" + a.String() }

func newEnv(t testing.TB, pinPath string) *env {
	t.Helper()
	testutil.RequireCommands(t, "ip")
	e := &env{t: t, ns: testutil.NewNetNS(t, "sock")}
	for _, a := range backendAddrs {
		bits := 32
		if a.Is6() {
			bits = 128
		}
		e.ns.Run(t, "ip", "addr", "add", netip.PrefixFrom(a, bits).String(), "dev", "lo", "nodad")
	}
	e.startServers()
	e.cgroup = testCgroup(t)
	var err error
	e.xdp, err = xdp.Load(xdp.Options{RingSize: 1021, PinPath: pinPath})
	if err != nil {
		t.Fatalf("load xdp maps: %v", err)
	}
	t.Cleanup(func() { e.xdp.Close() })
	e.sock, err = Load(Options{Shared: e.xdp.Shared(), PinPath: pinPath, SampleEvery: 1})
	if err != nil {
		t.Fatalf("load socket lb: %v", err)
	}
	t.Cleanup(func() { e.sock.Close() })
	e.sock.ResetOnNewVIP(e.xdp)
	if err := e.sock.Attach(e.cgroup); err != nil {
		t.Fatalf("attach: %v", err)
	}
	return e
}

// testCgroup creates a cgroup under the cgroup2 root, removed when the test ends.
func testCgroup(t testing.TB) string {
	t.Helper()
	root, err := DefaultCgroup()
	if err != nil {
		t.Fatalf("find cgroup2: %v", err)
	}
	var b [3]byte
	rand.Read(b[:])
	dir := filepath.Join(root, "l4lbt-sock-"+hex.EncodeToString(b[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	t.Cleanup(func() {
		// The children have exited by now; retry briefly while the kernel reaps them.
		var err error
		for i := 0; i < 50; i++ {
			if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("remove test cgroup %s: %v", dir, err)
	})
	return dir
}

// startServers runs, in the namespace, a TCP server on :80 and a UDP server on :53 of
// every backend address, answering each line or datagram with the backend's name.
func (e *env) startServers() {
	t := e.t
	var listeners []net.Listener
	var conns []net.PacketConn
	err := e.ns.Do(func() error {
		for _, a := range backendAddrs {
			l, err := net.Listen("tcp", netip.AddrPortFrom(a, 80).String())
			if err != nil {
				return err
			}
			listeners = append(listeners, l)
			// A second port for the benchmark: accept and close at once.
			l2, err := net.Listen("tcp", netip.AddrPortFrom(a, 81).String())
			if err != nil {
				return err
			}
			listeners = append(listeners, l2)
			pc, err := net.ListenPacket("udp", netip.AddrPortFrom(a, 53).String())
			if err != nil {
				return err
			}
			conns = append(conns, pc)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start backends: %v", err)
	}
	for i, l := range listeners {
		name := backendName(backendAddrs[i/2])
		quick := i%2 == 1
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				if quick {
					c.Close()
					continue
				}
				go func() {
					defer c.Close()
					r := bufio.NewReader(c)
					for {
						if _, err := r.ReadString('\n'); err != nil {
							return
						}
						if _, err := c.Write([]byte(name + "\n")); err != nil {
							return
						}
					}
				}()
			}
		}()
	}
	for i, pc := range conns {
		name := backendName(backendAddrs[i])
		go func() {
			buf := make([]byte, 512)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo([]byte(name+"\n"), from)
			}
		}()
	}
	t.Cleanup(func() {
		for _, l := range listeners {
			l.Close()
		}
		for _, c := range conns {
			c.Close()
		}
	})
}

// clientCmd builds the child running spec in the namespace, inside the test cgroup when
// inCgroup.
func (e *env) clientCmd(spec clientSpec, inCgroup bool) *exec.Cmd {
	t := e.t
	b, _ := json.Marshal(spec)
	cmd := exec.Command("ip", "netns", "exec", e.ns.Name(), os.Args[0])
	// No async preemption: its SIGURG interrupts a blocking connect (EINTR: a connect
	// with a send timeout is not restarted), which a slow VM makes likely.
	cmd.Env = append(os.Environ(), envClient+"="+string(b), "GODEBUG=asyncpreemptoff=1")
	if inCgroup {
		f, err := os.Open(e.cgroup)
		if err != nil {
			t.Fatalf("open cgroup: %v", err)
		}
		t.Cleanup(func() { f.Close() })
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
	return cmd
}

// client runs spec to completion and returns its results.
func (e *env) client(spec clientSpec, inCgroup bool) []clientResult {
	e.t.Helper()
	cmd := e.clientCmd(spec, inCgroup)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("client %+v: %v: %s", spec, err, stderr.String())
	}
	return decodeResults(e.t, string(out))
}

func decodeResults(t testing.TB, out string) []clientResult {
	t.Helper()
	var rs []clientResult
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r clientResult
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("decode client output %q: %v", out, err)
		}
		rs = append(rs, r)
	}
	return rs
}

// setVIP programs a VIP over backends (ids are the index in backendAddrs + 1).
func (e *env) setVIP(addr string, port uint16, proto lb.Proto, weights map[netip.Addr]uint32) uint32 {
	e.t.Helper()
	v := lb.VIP{Key: lb.VIPKey{Addr: netip.MustParseAddr(addr), Port: port, Proto: proto}}
	for i, a := range backendAddrs {
		if w, ok := weights[a]; ok {
			v.Backends = append(v.Backends, lb.Backend{ID: uint32(i + 1), Addr: a, Weight: w})
		}
	}
	id, err := e.xdp.SetVIP(v)
	if err != nil {
		e.t.Fatalf("set vip: %v", err)
	}
	return id
}

func weights(w uint32, addrs ...netip.Addr) map[netip.Addr]uint32 {
	m := map[netip.Addr]uint32{}
	for _, a := range addrs {
		m[a] = w
	}
	return m
}

// heldClient is a child started with Hold, driven line by line.
type heldClient struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func (e *env) startHeld(spec clientSpec) *heldClient {
	e.t.Helper()
	spec.Hold, spec.Count = true, 1
	cmd := e.clientCmd(spec, true)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	h := &heldClient{t: e.t, cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	e.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return h
}

// next reads the child's next result.
func (h *heldClient) next() clientResult {
	h.t.Helper()
	line, err := h.out.ReadString('\n')
	if err != nil {
		h.t.Fatalf("held client: %v", err)
	}
	var r clientResult
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		h.t.Fatalf("held client output %q: %v", line, err)
	}
	return r
}

// release lets the child go on and returns its last result.
func (h *heldClient) release() clientResult {
	h.t.Helper()
	io.WriteString(h.stdin, "go\n")
	h.stdin.Close()
	r := h.next()
	if err := h.cmd.Wait(); err != nil {
		h.t.Fatalf("held client: %v", err)
	}
	return r
}

// connectFD connects a blocking socket; a connect a signal interrupted goes on in the
// background, so it waits for it instead of failing.
func connectFD(fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	if err != unix.EINTR {
		return err
	}
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, 5000)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soerr != 0 {
		return syscall.Errno(soerr)
	}
	return nil
}
