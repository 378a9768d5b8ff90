package socklb

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

// BenchmarkPrivilegedConnect measures connect()+close() of a TCP socket, one op each, on
// loopback in a test namespace, in one run:
//   - plain: straight to the backend, process outside any socket LB cgroup (no hook);
//   - direct: straight to the backend from inside the cgroup (hook runs, no VIP matches);
//   - vip: to the VIP, translated to the same single backend by the socket LB;
//   - pair: one direct and one vip connect per op, timed apart; overhead-% compares
//     their medians.
//
// Quote pair's overhead-%: the machine is shared, absolute figures are noisy. The socket
// closes with SO_LINGER 0 (RST, no TIME_WAIT), so ports are not exhausted.
func BenchmarkPrivilegedConnect(b *testing.B) {
	e := newEnv(b, "")
	e.setVIP("203.0.113.10", 81, lb.ProtoTCP, weights(1, v4[0]))
	backend := &unix.SockaddrInet4{Addr: v4[0].As4(), Port: 81}
	vip := &unix.SockaddrInet4{Addr: [4]byte{203, 0, 113, 10}, Port: 81}
	run := func(b *testing.B, sa unix.Sockaddr) {
		err := e.ns.Do(func() error {
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := connectClose(sa); err != nil {
					return err
				}
			}
			b.StopTimer()
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Run("plain", func(b *testing.B) { run(b, backend) })
	joinCgroup(b, e.cgroup)
	b.Run("direct", func(b *testing.B) { run(b, backend) })
	b.Run("vip", func(b *testing.B) { run(b, vip) })
	// pair alternates a direct and a vip connect in every op, timing each, so both see
	// the same load on a shared machine: its vip/direct ratio is the figure to quote.
	b.Run("pair", func(b *testing.B) {
		took := [2][]time.Duration{make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)}
		err := e.ns.Do(func() error {
			for i := 0; i < b.N; i++ {
				// Alternate which goes first: the second connect of a pair competes
				// with the server still handling the first.
				for k := range 2 {
					j := (i + k) % 2
					sa := []unix.Sockaddr{backend, vip}[j]
					start := time.Now()
					if err := connectClose(sa); err != nil {
						return err
					}
					took[j] = append(took[j], time.Since(start))
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		// Medians: a shared machine's stalls hit single connects hard.
		direct, viaVIP := median(took[0]), median(took[1])
		b.ReportMetric(direct, "direct-median-ns")
		b.ReportMetric(viaVIP, "vip-median-ns")
		b.ReportMetric(100*(viaVIP-direct)/direct, "overhead-%")
	})
	id := uint32(0)
	if c, err := e.sock.Counters(id); err == nil && c.Connects == 0 {
		b.Fatalf("vip: no connect was translated (%+v)", c)
	}
}

// joinCgroup moves this process into dir until tb ends, then back where it was.
func joinCgroup(tb testing.TB, dir string) {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		tb.Fatal(err)
	}
	var orig string
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			orig = rest
		}
	}
	root, err := DefaultCgroup()
	if err != nil || orig == "" {
		tb.Fatalf("find this process's cgroup v2: %v (%q)", err, orig)
	}
	pid := []byte(fmt.Sprint(os.Getpid()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), pid, 0); err != nil {
		tb.Fatalf("join %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(root, orig, "cgroup.procs"), pid, 0); err != nil {
			tb.Errorf("return to %s: %v", orig, err)
		}
	})
}

func connectClose(sa unix.Sockaddr) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := connectFD(fd, sa); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

func median(ds []time.Duration) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Nanoseconds())
}
