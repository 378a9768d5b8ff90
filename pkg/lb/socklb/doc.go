// Package socklb owns connect-time socket load balancing: it loads bpf/sock_lb.c over the
// XDP data plane's maps, attaches its cgroup sock_addr programs and reads its counters
// and sampled clients.
package socklb
