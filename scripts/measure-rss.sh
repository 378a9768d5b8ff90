#!/usr/bin/env bash
# measure-rss.sh: the daemon's RSS and first-apply time with 100 VIPs x 10 backends.
# Runs the real daemon in a throwaway network namespace with its own bpffs; cleans up.
# Usage (root): scripts/measure-rss.sh [VIPS] [BACKENDS]
set -euo pipefail
vips=${1:-100}; per=${2:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d); ns=l4lbt-rss-$$
cleanup() {
	[ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	ip netns exec "$ns" "$tmp/l4lb" cleanup --config "$tmp/l4lb.yaml" >/dev/null 2>&1 || true
	umount "$tmp/bpffs" 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
(cd "$root" && go build -o "$tmp/l4lb" ./cmd/l4lb)
ip netns add "$ns"
ip -n "$ns" link add a0 type veth peer name a1
ip -n "$ns" link set lo up; ip -n "$ns" link set a0 up; ip -n "$ns" link set a1 up
mkdir -p "$tmp/bpffs"; mount -t bpf bpf "$tmp/bpffs"
{
	printf 'interfaces: [a0]\nbpffs: %s/bpffs/l4lb\nstate_file: %s/state.json\nnexthop: {mac: "02:00:00:00:00:01"}\n' "$tmp" "$tmp"
	printf 'encap: {source4: 192.0.2.0/24}\nadmin: {listen: 127.0.0.1:9100}\nvips:\n'
	for v in $(seq 0 $((vips - 1))); do
		printf '  - name: v%d\n    address: 203.0.113.%d\n    port: %d\n    protocol: tcp\n    backends:\n' "$v" $((v % 250 + 1)) $((1000 + v))
		for b in $(seq 0 $((per - 1))); do
			printf '      - address: 198.51.100.%d\n' $(((v * per + b) % 250 + 1))
		done
	done
} > "$tmp/l4lb.yaml"
# Backends must be distinct within a VIP and may be shared between VIPs (addresses wrap at 250).
start=$(date +%s.%N)
ip netns exec "$ns" "$tmp/l4lb" run --config "$tmp/l4lb.yaml" 2>"$tmp/log" &
pid=$!
until ip netns exec "$ns" curl -sf http://127.0.0.1:9100/readyz >/dev/null 2>&1; do
	kill -0 "$pid" 2>/dev/null || { echo "daemon exited:" >&2; cat "$tmp/log" >&2; exit 1; }
	sleep 0.05
done
ready=$(date +%s.%N)
sleep 1
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
echo "vips=$vips backends_per_vip=$per ready_after_s=$(awk -v a="$start" -v b="$ready" 'BEGIN {printf "%.2f", b - a}') rss_kib=$rss"
grep -m1 'msg=applied' "$tmp/log" || true
