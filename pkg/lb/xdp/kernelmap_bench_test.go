package xdp

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/l4lb/l4lb/internal/testutil"
)

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel benchmaps ../../../bpf/bench_maps.c -- -I/usr/include/x86_64-linux-gnu

// BenchmarkKernelMapUpdate: what one bpf_map_update_elem with a 40-byte key costs from an
// XDP program, in the kernel's LRU hash with per-CPU LRU lists (conntrack before the
// bucket table) and in a plain hash, with a new key every run or the same key. Measured
// as BenchmarkXDP measures (one BPF_PROG_TEST_RUN per packet); here x-baseline is against
// `none`, the same program without the update.
func BenchmarkKernelMapUpdate(b *testing.B) {
	testutil.RequirePrivileged(b)
	var objs benchmapsObjects
	if err := loadBenchmapsObjects(&objs, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { objs.Close() })
	pkt := make([]byte, 64)
	baselineNs = 0
	defer func() { baselineNs = 0 }()
	for _, c := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"none", objs.None},
		{"lru_new_key", objs.LruNew},
		{"lru_same_key", objs.LruSame},
		{"hash_new_key", objs.HashNew},
		{"hash_same_key", objs.HashSame},
	} {
		b.Run(c.name, func(b *testing.B) {
			if c.name == "none" {
				baselineNs = 0
			}
			ns := measure(b, c.prog, func(int) []byte { return pkt }, xdpPass)
			if c.name == "none" {
				baselineNs = ns
			}
		})
	}
}
