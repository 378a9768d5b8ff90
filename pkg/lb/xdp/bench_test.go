package xdp

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/decap"
	"github.com/l4lb/l4lb/pkg/lb"
)

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel baseline ../../../bpf/baseline.c -- -I/usr/include/x86_64-linux-gnu

// The benchmarks report ns/pkt: the kernel's own timing of one program run
// (BPF_PROG_TEST_RUN with repeat=1, since a repeated run would feed the already
// encapsulated packet back in), x-baseline: that figure over the
// baseline program's (MAC swap + XDP_TX) in the same run, and bpfstats-ns/pkt: the same
// cost read from the kernel's bpf_stats (run_time_ns / run_cnt) over 20000 further runs,
// as a cross-check. ns/op includes the syscall and is not the packet cost.

var baselineNs float64

// measure runs p once per iteration on next(i) and reports the figures above.
func measure(b *testing.B, p *ebpf.Program, next func(i int) []byte, wantVerdict uint32) float64 {
	b.Helper()
	var total time.Duration
	var runs int
	for b.Loop() {
		ret, d, err := p.Benchmark(next(runs), 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		if ret != wantVerdict {
			b.Fatalf("verdict %d, want %d", ret, wantVerdict)
		}
		total += d
		runs++
	}
	nsPkt := float64(total.Nanoseconds()) / float64(runs)
	b.ReportMetric(nsPkt, "ns/pkt")
	if baselineNs > 0 {
		b.ReportMetric(nsPkt/baselineNs, "x-baseline")
	}

	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Logf("bpf_stats unavailable: %v", err)
		return nsPkt
	}
	defer stats.Close()
	before, err := p.Stats()
	if err != nil {
		b.Fatal(err)
	}
	const n = 20000
	for i := 0; i < n; i++ {
		if _, err := p.Run(&ebpf.RunOptions{Data: next(runs + i)}); err != nil {
			b.Fatal(err)
		}
	}
	after, err := p.Stats()
	if err != nil {
		b.Fatal(err)
	}
	if cnt := after.RunCount - before.RunCount; cnt > 0 {
		b.ReportMetric(float64((after.Runtime-before.Runtime).Nanoseconds())/float64(cnt), "bpfstats-ns/pkt")
	}
	return nsPkt
}

func BenchmarkXDP(b *testing.B) {
	r := newRig(b, Options{ConntrackSize: 1 << 20})
	web := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: make([]lb.Backend, 100)}
	for i := range web.Backends {
		web.Backends[i] = lb.Backend{ID: uint32(i + 1), Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}), Weight: 1}
	}
	r.setVIP(web)

	syn := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"}.build(b)
	ack := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "A"}.build(b)
	pass := pkt{src: cli4, dst: "198.51.100.99", proto: tcp, sport: 40000, dport: 80, flags: "A"}.build(b)

	var objs baselineObjects
	if err := loadBaselineObjects(&objs, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { objs.Close() })
	bl := objs.XdpBaseline
	b.Run("baseline", func(b *testing.B) {
		baselineNs = 0
		baselineNs = measure(b, bl, func(int) []byte { return ack }, xdpTx)
	})
	denied := pkt{src: "203.0.113.99", dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "S"}.build(b)
	sport := uint16(0)
	seq := uint32(0) // shared by every syn run (and -count repeat): each SYN is a new flow
	paths := func(prefix string) {
		b.Run(prefix+"syn", func(b *testing.B) {
			measure(b, r.d.Program(), newFlows(syn, &seq), xdpTx)
		})
		b.Run(prefix+"established", func(b *testing.B) {
			// A flow of its own for each sub-benchmark: the syn runs may have replaced
			// the entry of any earlier one.
			sport++
			frame := append([]byte(nil), ack...)
			binary.BigEndian.PutUint16(frame[14+20:], 60000+sport)
			if ret, _ := r.run(frame); ret != xdpTx {
				b.Fatalf("priming run: verdict %d", ret)
			}
			measure(b, r.d.Program(), func(int) []byte { return frame }, xdpTx)
		})
		b.Run(prefix+"pass", func(b *testing.B) {
			measure(b, r.d.Program(), func(int) []byte { return pass }, xdpPass)
		})
		b.Run(prefix+"prefilter_drop", func(b *testing.B) {
			if err := r.d.DenyAdd([]netip.Prefix{netip.MustParsePrefix("203.0.113.96/29")}); err != nil {
				b.Fatal(err)
			}
			measure(b, r.d.Program(), func(int) []byte { return denied }, xdpDrop)
		})
	}
	// syn, established and pass with an empty deny list first (prefilter_drop adds one
	// prefix, which stays for the -count repeats and the 1M runs).
	paths("")
	// The same with the monitor on, drops and every flow decision, no rate limit (no
	// reader: events that find the ring full are counted as lost, which costs the same
	// reserve attempt).
	if err := r.d.SetMonitor(MonitorSettings{Drops: true, Flows: true}); err != nil {
		b.Fatal(err)
	}
	paths("monitor_")
	if err := r.d.SetMonitor(MonitorSettings{}); err != nil {
		b.Fatal(err)
	}
	// The same paths with a 1,000,000-prefix deny list: the lookup walks at most 32 bits
	// of the trie whatever its size.
	if err := r.d.DenyAdd(millionPrefixes(1_000_000, mustAddr(cli4), mustAddr("198.51.100.99"), mustAddr("203.0.113.99"))); err != nil {
		b.Fatal(err)
	}
	paths("deny1M_")

	// New flows once the table is full of flows that still send (every way referenced):
	// the worst case for an insert, which then reads both buckets and gives the first
	// one's flows their second chance.
	fillConntrack(b, r.d)
	b.Run("syn_full_table", func(b *testing.B) {
		measure(b, r.d.Program(), newFlows(syn, &seq), xdpTx)
	})
}

// newFlows returns a packet source for measure: copies of the IPv4 TCP frame tmpl, each
// a new flow (a fresh source port and low half of the source address from *seq).
func newFlows(tmpl []byte, seq *uint32) func(int) []byte {
	frame := append([]byte(nil), tmpl...)
	return func(int) []byte {
		*seq++
		binary.BigEndian.PutUint16(frame[14+20:], uint16(*seq))            // TCP source port
		binary.BigEndian.PutUint16(frame[14+14:], uint16(*seq>>16)|0x8000) // low half of the source address
		return frame
	}
}

// fillConntrack fills every way of the conntrack table with an established flow that
// still sends (random digests, backend 1).
func fillConntrack(b *testing.B, d *Dataplane) {
	b.Helper()
	n := d.objs.Conntrack.MaxEntries()
	keys := make([]uint32, n)
	vals := make([]xdplbCtBucket, n)
	rnd := rand.New(rand.NewPCG(5, 6))
	for i := range keys {
		keys[i] = uint32(i)
		for w := range vals[i].Way {
			vals[i].Way[w] = xdplbCtWay{Digest: rnd.Uint64(), State: 1 | ctRef | ctEst}
		}
	}
	if _, err := d.objs.Conntrack.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkDecap(b *testing.B) {
	r := newRig(b, Options{})
	r.setVIP(lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11")})
	in := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 40000, dport: 80, flags: "A", payload: 64}.build(b)
	ret, encapped := r.run(in)
	if ret != xdpTx {
		b.Fatalf("encap verdict %d", ret)
	}
	d, err := decap.Load()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	if err := d.AddVIP(mustAddr("203.0.113.10")); err != nil {
		b.Fatal(err)
	}
	if err := d.AllowFrom(testSource4); err != nil {
		b.Fatal(err)
	}
	measure(b, d.Program(), func(int) []byte { return encapped }, xdpPass)
}
