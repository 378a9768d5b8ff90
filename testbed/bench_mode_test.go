package testbed_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l4lb/l4lb/testbed"
)

// cpuBusy returns the machine's busy CPU time so far (all CPUs, from /proc/stat): user,
// nice, system, irq, softirq and steal. Forwarding runs in softirq, which no process
// accounts for, so the data plane's cost is read machine-wide.
func cpuBusy(tb testing.TB) time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, _ := strconv.ParseUint(f[i], 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

// clientDialer dials from the client's namespace.
func clientDialer(b *testbed.Bed) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return b.DialContext(ctx, "client", network, addr)
	}
}

// load sends HTTP requests, each on a new connection, from workers goroutines for d and
// returns the requests answered and the machine's busy CPU time meanwhile.
func load(tb testing.TB, b *testbed.Bed, url string, workers int, d time.Duration) (int64, int64, time.Duration) {
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: clientDialer(b), DisableKeepAlives: true}}
	var ok, failed atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := cpuBusy(tb)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := client.Get(url)
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return ok.Load(), failed.Load(), cpuBusy(tb) - start
}

// BenchmarkPrivilegedTestbedModes: requests per second through the VIP and the machine's
// CPU per request, per data plane mode, against the same load sent straight to one
// backend in the same run (the machine is shared: compare ratios, not absolute figures).
// Each request is a new TCP connection (a new flow: the NAT modes' costly path).
//
//	make bench  (or: L4LB_PRIVILEGED_TESTS=1 go test -run '^$' -bench TestbedModes -benchtime 1x ./testbed/)
func BenchmarkPrivilegedTestbedModes(b *testing.B) {
	const workers, dur = 8, 4 * time.Second
	for _, mode := range []string{"xdp", "nftables", "iptables"} {
		b.Run(mode, func(b *testing.B) {
			bed := newBed(b, func(c *testbed.Config) { c.Mode = mode })
			direct := "http://" + testbed.BackendAddr4("be1") + "/"
			vip := "http://" + testbed.VIP4 + "/"
			load(b, bed, vip, workers, time.Second) // warm up
			var rps, cpu, rpsD, cpuD []float64
			for range b.N {
				for _, c := range []struct {
					url       string
					rps, cpus *[]float64
				}{{direct, &rpsD, &cpuD}, {vip, &rps, &cpu}} {
					n, failed, busy := load(b, bed, c.url, workers, dur)
					if n == 0 || failed > n/100 {
						b.Fatalf("%s: %d answered, %d failed", c.url, n, failed)
					}
					*c.rps = append(*c.rps, float64(n)/dur.Seconds())
					*c.cpus = append(*c.cpus, float64(busy.Microseconds())/float64(n))
				}
			}
			avg := func(xs []float64) float64 {
				s := 0.0
				for _, x := range xs {
					s += x
				}
				return s / float64(len(xs))
			}
			b.ReportMetric(avg(rps), "req/s")
			b.ReportMetric(avg(cpu), "cpu-us/req")
			b.ReportMetric(avg(rps)/avg(rpsD), "x-direct-req/s")
			b.ReportMetric(avg(cpu)/avg(cpuD), "x-direct-cpu/req")
			b.ReportMetric(avg(cpu)-avg(cpuD), "lb-cpu-us/req")
		})
	}
}
