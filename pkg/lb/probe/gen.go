package probe

// The BPF object is compiled by bpf2go with the pinned clang (make generate) and the
// output is committed, so `go build` needs no clang.

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type backend probetc ../../../bpf/probe_tc.c -- -I/usr/include/x86_64-linux-gnu
