#!/usr/bin/env bash
# measure-rss.sh: the daemon's RSS, first-apply time and kernel map memory with VIPS VIPs
# x BACKENDS backends at RING_SIZE slots (default 100 x 10 at 65537).
# Runs the real daemon in a throwaway network namespace with its own bpffs; cleans up.
# Usage (root): scripts/measure-rss.sh [VIPS] [BACKENDS] [RING_SIZE]
#   e.g. scripts/measure-rss.sh 10000 10 4099; scripts/measure-rss.sh 1000 10 65537
set -euo pipefail
vips=${1:-100}; per=${2:-10}; ring=${3:-65537}
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
	printf 'encap: {source4: 192.0.2.0/24}\nadmin: {listen: 127.0.0.1:9100}\nxdp: {ring_size: %d}\nvips:\n' "$ring"
	for v in $(seq 0 $((vips - 1))); do
		printf '  - name: v%d\n    address: 203.0.113.%d\n    port: %d\n    protocol: tcp\n    backends:\n' "$v" $((v % 250 + 1)) $((1000 + v / 250))
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
# Kernel memory of the pinned maps (bpftool's memlock per map), total and per VIP.
maps_kib=0
for m in "$tmp"/bpffs/l4lb/*; do
	case "$(basename "$m")" in link_*) continue ;; esac
	b=$(bpftool map show pinned "$m" 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "memlock") {sub("B", "", $(i+1)); print $(i+1)}}')
	[ -n "$b" ] && { printf '  map %-14s %8d KiB\n' "$(basename "$m")" $((b / 1024)); maps_kib=$((maps_kib + b / 1024)); }
done
echo "vips=$vips backends_per_vip=$per ring_size=$ring ready_after_s=$(awk -v a="$start" -v b="$ready" 'BEGIN {printf "%.2f", b - a}') rss_kib=$rss kernel_maps_kib=$maps_kib"
grep -m1 'msg=applied' "$tmp/log" || true
