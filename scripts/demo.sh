#!/usr/bin/env bash
# demo.sh: the whole system on one machine (make demo). Brings the testbed up (BIRD router,
# lb1 and lb2 running l4lb from conf/testbed/, three backends, a client), sends traffic, then
# stops a backend and an LB node and shows what happens. Leaves the testbed up.
set -euo pipefail
cd "$(dirname "$0")/.."
T=bin/testbed
L=$PWD/bin/l4lb

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# requests N URL: N requests from the client, each a new connection; prints a count per backend.
requests() {
	$T exec client -- sh -c "for i in \$(seq $1); do curl -s -m 2 '$2' || echo FAILED; done" | sort | uniq -c | sed 's/^/   /'
}
vip_packets() { # the web VIP's packet counter on an LB node
	$T exec "$1" -- "$L" vips | awk '$2 == "web" {print $4}'
}

# MODE (make demo MODE=nftables|iptables) picks the LB nodes' data plane; default: their
# config's (xdp). bin/testbed reads it from L4LB_TESTBED_MODE.
export L4LB_TESTBED_MODE="${L4LB_TESTBED_MODE:-${MODE:-}}"

say "Building and bringing the testbed up (removes a stale one first; data plane: ${L4LB_TESTBED_MODE:-from the config})"
$T up
$T status

say "BIRD on the router: one session per LB node and address family"
$T exec router -- birdc -s /run/l4lb-testbed/router/bird.ctl show protocols | grep -E 'BGP|Name'

say "The router's routes to the VIPs: ECMP over lb1 and lb2"
$T exec router -- birdc -s /run/l4lb-testbed/router/bird.ctl show route for 203.0.113.10
$T exec router -- ip route show 203.0.113.10
$T exec router -- ip -6 route show 2001:db8:f::10

say "300 HTTP requests to http://203.0.113.10/ from the client (answers name the backend)"
requests 300 http://203.0.113.10/
say "100 HTTP requests to http://[2001:db8:f::10]/"
requests 100 'http://[2001:db8:f::10]/'
say "30 UDP datagrams to 203.0.113.10:53"
$T exec client -- "$PWD/$T" udp 203.0.113.10:53 --count 30 | sort | uniq -c | sed 's/^/   /'

say "iperf3 through the VIP (2 s; the iperf VIP hashes without the source port)"
$T exec client -- iperf3 -c 203.0.113.10 -t 2 -f m | grep -E 'sender|receiver'

for lb in lb1 lb2; do
	say "l4lb status on $lb"
	$T exec $lb -- "$L" status
done

say "Metrics excerpt (lb1, curl 127.0.0.1:9100/metrics)"
$T exec lb1 -- curl -s http://127.0.0.1:9100/metrics | grep -E '^l4lb_(vip_packets_total|backend_up\{vip="web"|bgp_session_up|bgp_announced|conntrack_lookups_total|apply_duration_seconds_count)'

say "Stopping be2's servers: health checks take it out (fall 2 x 500ms)"
$T stop be2
for _ in $(seq 50); do
	$T exec lb1 -- "$L" backends | grep -q 'web .*203.0.113.34 .*down' &&
		$T exec lb2 -- "$L" backends | grep -q 'web .*203.0.113.34 .*down' && break
	sleep 0.1
done
$T exec lb1 -- "$L" backends | grep -E 'VIP|^web '
say "300 requests again: be2 gets none"
requests 300 http://203.0.113.10/
$T start be2

say "Stopping l4lb on lb1: it withdraws its routes, waits drain_delay, stops"
before2=$(vip_packets lb2)
$T stop lb1
$T wait --hops 1
$T exec router -- ip route show 203.0.113.10
$T exec router -- birdc -s /run/l4lb-testbed/router/bird.ctl show protocols | grep -E 'lb1'
say "300 requests: all through lb2"
requests 300 http://203.0.113.10/
after2=$(vip_packets lb2)
echo "   web VIP packets on lb2: $before2 -> $after2 (lb1 is stopped; its XDP program or NAT rules stay but receive nothing)"

say "Starting l4lb on lb1 again: it adopts its pinned maps and announces"
$T start lb1
$T wait --hops 2
$T exec router -- ip route show 203.0.113.10

cat <<EOF

The testbed stays up. Explore it, for example:
   bin/testbed exec l4lb-client -- curl http://203.0.113.10/
   bin/testbed exec l4lb-lb1 -- bin/l4lb status
   bin/testbed exec l4lb-router -- birdc -s /run/l4lb-testbed/router/bird.ctl show route
   bin/testbed status
Remove it with: make demo-down
EOF
