package limits

// The numbers the BPF programs are built with come from bpf/lb_consts.h (and flowhash.h,
// jhash.h) through bpf/consts.c, compiled by bpf2go with the pinned clang (make
// generate); the output is committed, so `go build` needs no clang.

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -no-global-types -type limit -type family -type ct_layout -type map_layout -type flag -type observe consts ../../bpf/consts.c -- -I/usr/include/x86_64-linux-gnu
