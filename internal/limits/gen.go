package limits

// The sizes come from bpf/lb_consts.h through bpf/consts.c, compiled by bpf2go with the
// pinned clang (make generate); the output is committed, so `go build` needs no clang.

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -no-global-types -type limit consts ../../bpf/consts.c -- -I/usr/include/x86_64-linux-gnu
