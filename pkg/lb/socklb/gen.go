package socklb

// The BPF object is compiled by bpf2go with the pinned clang (make generate) and the
// output is committed, so `go build` needs no clang.

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type sock_rev_key -type sock_rev_val -type sock_vip_counters -type mon_cpu socklb ../../../bpf/sock_lb.c -- -I/usr/include/x86_64-linux-gnu
