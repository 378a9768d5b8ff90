package xdp

// The forwarder's BPF object is compiled by bpf2go with the pinned clang (make generate)
// and the output is committed, so `go build` needs no clang. The objects only tests and
// benchmarks load are generated from their _test.go files into _bpfel_test files.

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type vip_key -type vip_meta -type backend -type ct_way -type ct_bucket -type lb_config -type vip_counters -type backend_counters -type stat_id -type ring_select -type ring_block -type deny4_key -type deny6_key -type deny_value -type allow_key -type vip_policy -type vip_guard -type pair_bucket -type nexthop -type too_big_key -type too_big_window -type mon_event -type mon_cpu -type trace_record xdplb ../../../bpf/xdp_lb.c -- -I/usr/include/x86_64-linux-gnu
