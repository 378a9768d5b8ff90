package xdp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

// TestPrivilegedPrefilterTable: the prefilter (deny and allow lists), the new-flow guard,
// the packet rules (impossible TCP flags, UDP length, ICMP to the node) and the too-big
// answers, one packet per row, counters checked exactly.
func TestPrivilegedPrefilterTable(t *testing.T) {
	r := newRig(t, Options{ConntrackSize: 4096})
	web4 := lb.VIP{Key: key("203.0.113.10", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")}
	dns4 := lb.VIP{Key: key("203.0.113.10", 53, udp), Backends: backends(1, "198.51.100.11", "198.51.100.12")}
	web6 := lb.VIP{Key: key("2001:db8:f::10", 80, tcp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")}
	dns6 := lb.VIP{Key: key("2001:db8:f::10", 53, udp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")}
	mixed := lb.VIP{Key: key("203.0.113.30", 80, tcp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")}
	private := lb.VIP{Key: key("203.0.113.70", 443, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12")}
	private6 := lb.VIP{Key: key("2001:db8:f::70", 443, tcp), Backends: backends(11, "2001:db8:b::11", "2001:db8:b::12")}
	guarded := lb.VIP{Key: key("203.0.113.80", 80, tcp), Backends: backends(1, "198.51.100.11", "198.51.100.12", "198.51.100.13")}
	// Policies may be set before the VIP exists: they are written with it.
	if err := r.d.SetPolicy(private.Key, Policy{Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/30")}}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []lb.VIP{web4, dns4, web6, dns6, mixed, private, private6, guarded} {
		r.setVIP(v)
	}
	if err := r.d.SetPolicy(private6.Key, Policy{Allow: []netip.Prefix{netip.MustParsePrefix("2001:db8:c::/64")}}); err != nil {
		t.Fatal(err)
	}
	if err := r.d.SetPolicy(guarded.Key, Policy{GuardRate: 2, GuardDropRate: 4}); err != nil {
		t.Fatal(err)
	}
	vipIDs, err := r.d.VIPs()
	if err != nil {
		t.Fatal(err)
	}

	toRing := func(k lb.VIPKey, p pkt) func(t *testing.T, in []byte) []byte {
		return func(t *testing.T, in []byte) []byte {
			id := r.ringBackend(k, p.flow())
			return encapsulated(t, in, r.addrs[id], FlowHash(p.flow(), r.vips[k].Flags), macNextHop)
		}
	}
	ctIs := func(p pkt, wantID uint32, wantOK bool) func(t *testing.T) {
		return func(t *testing.T) {
			got, ok, err := r.d.ConntrackLookup(p.flow())
			if err != nil {
				t.Fatal(err)
			}
			if ok != wantOK || (ok && got != wantID) {
				t.Errorf("conntrack for %v: got (%d, %v), want (%d, %v)", p.flow(), got, ok, wantID, wantOK)
			}
		}
	}
	ctRing := func(k lb.VIPKey, p pkt) func(t *testing.T) {
		return func(t *testing.T) { ctIs(p, r.ringBackend(k, p.flow()), true)(t) }
	}
	ctAbsent := func(p pkt) func(t *testing.T) { return ctIs(p, 0, false) }
	denyDrops := func(prefix string, want uint64) func(t *testing.T) {
		return func(t *testing.T) {
			list, err := r.d.DenyList()
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range list {
				if e.Prefix.String() == prefix {
					if e.Drops != want {
						t.Errorf("deny %s: %d drops, want %d", prefix, e.Drops, want)
					}
					return
				}
			}
			t.Errorf("deny %s not listed in %v", prefix, list)
		}
	}
	guardIs := func(k lb.VIPKey, want GuardCounters) func(t *testing.T) {
		return func(t *testing.T) {
			got, err := r.d.GuardCounters(vipIDs[k])
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("guard counters of %s: %+v, want %+v", k, got, want)
			}
		}
	}
	// guardAt starts a guard window on every CPU now with count new flows already in it
	// (keeping the counters), so each guard row is independent of how long the rows
	// before it took (a slow VM takes more than the one-second window for the table).
	guardAt := func(k lb.VIPKey, count uint64) func(t *testing.T) {
		return func(t *testing.T) {
			var ts unix.Timespec
			if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
				t.Fatal(err)
			}
			var per []xdplbVipGuard
			if err := r.d.objs.VipGuards.Lookup(vipIDs[k], &per); err != nil {
				t.Fatal(err)
			}
			for i := range per {
				per[i].WindowNs = uint64(ts.Nano())
				per[i].Count = count
			}
			if err := r.d.objs.VipGuards.Put(vipIDs[k], per); err != nil {
				t.Fatal(err)
			}
		}
	}
	freshWindow := func(k lb.VIPKey) func(t *testing.T) { return guardAt(k, 0) }
	deny := func(prefixes ...string) func(t *testing.T) {
		return func(t *testing.T) {
			var ps []netip.Prefix
			for _, p := range prefixes {
				ps = append(ps, netip.MustParsePrefix(p))
			}
			if err := r.d.DenyAdd(ps); err != nil {
				t.Fatal(err)
			}
		}
	}

	syn4 := pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 50000, dport: 80, flags: "S"}
	syn6 := pkt{src: cli6, dst: "2001:db8:f::10", proto: tcp, sport: 50000, dport: 80, flags: "S"}
	udp4 := pkt{src: cli4, dst: "203.0.113.10", proto: udp, sport: 5353, dport: 53, payload: 30}
	udp6 := pkt{src: cli6, dst: "2001:db8:f::10", proto: udp, sport: 5353, dport: 53, payload: 30}
	nonVIP4 := pkt{src: cli4, dst: "198.51.100.99", proto: tcp, sport: 40000, dport: 22, flags: "A"}
	bad := "203.0.113.99" // a denied client
	bad6 := "2001:db8:bad::7"
	udpLen := func(p pkt, l3off int, ulen uint16) func(t *testing.T) []byte {
		return raw(p, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[14+l3off+4:], ulen)
			return b
		})
	}
	var stale uint32

	cases := []pktCase{
		// Impossible TCP flag sets to a VIP are dropped, and write nothing.
		{name: "tcp with no flags", in: build(with(syn4, func(p *pkt) { p.flags = "" })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_tcp_flags": 1}, check: ctAbsent(syn4)},
		{name: "tcp syn+fin", in: build(with(syn4, func(p *pkt) { p.flags = "SF" })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_tcp_flags": 1}, check: ctAbsent(syn4)},
		{name: "tcp syn+rst", in: build(with(syn4, func(p *pkt) { p.flags = "SR" })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_tcp_flags": 1}},
		{name: "tcp fin+psh+urg (xmas)", in: build(with(syn4, func(p *pkt) { p.flags = "FPU" })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_tcp_flags": 1}},
		{name: "tcp fin without ack", in: build(with(syn4, func(p *pkt) { p.flags = "F" })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_tcp_flags": 1}},
		{name: "tcp psh alone", in: build(with(syn4, func(p *pkt) { p.flags = "P" })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_tcp_flags": 1}},
		{name: "ipv6 tcp syn+fin", in: build(with(syn6, func(p *pkt) { p.flags = "SF" })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_tcp_flags": 1}},
		{name: "tcp with no flags to a non-vip passes", in: build(with(nonVIP4, func(p *pkt) { p.flags = "" })), verdict: xdpPass,
			stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "tcp fin+ack+psh is a flag set connections carry", in: build(with(syn4, func(p *pkt) { p.sport, p.flags = 50001, "FAP" })), verdict: xdpTx,
			want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 50001 })), stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},

		// UDP length.
		{name: "udp length longer than the ip payload", in: udpLen(udp4, 20, 8+31), verdict: xdpDrop,
			stats: map[string]uint64{"drop_udp_len": 1}, check: ctAbsent(udp4)},
		{name: "udp length shorter than the ip payload", in: udpLen(udp4, 20, 8+29), verdict: xdpDrop,
			stats: map[string]uint64{"drop_udp_len": 1}, check: ctAbsent(udp4)},
		{name: "udp length below 8", in: udpLen(udp4, 20, 7), verdict: xdpDrop, stats: map[string]uint64{"drop_udp_len": 1}},
		{name: "udp length 0 (ipv6)", in: udpLen(udp6, 40, 0), verdict: xdpDrop, stats: map[string]uint64{"drop_udp_len": 1}},
		{name: "ipv6 udp length longer than the payload", in: udpLen(udp6, 40, 8+31), verdict: xdpDrop, stats: map[string]uint64{"drop_udp_len": 1}},
		{name: "udp length mismatch to a non-vip passes", in: udpLen(pkt{src: cli4, dst: "198.51.100.99", proto: udp, sport: 1, dport: 2, payload: 4}, 20, 99),
			verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "udp with the right length is forwarded", in: build(udp4), verdict: xdpTx, want: toRing(dns4.Key, udp4),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},

		// ICMP too-big: only to a VIP address, about a packet from that address.
		{name: "icmp frag-needed to the node quoting a vip flow goes to the kernel", in: func(t *testing.T) []byte {
			return icmpTooBigTo(t, syn4.flow(), router4, mustAddr("198.51.100.1"))
		}, verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "icmpv6 packet-too-big to the node quoting a vip flow goes to the kernel", in: func(t *testing.T) []byte {
			return icmpTooBigTo(t, syn6.flow(), router6, mustAddr("2001:db8:c::1"))
		}, verdict: xdpPass, stats: map[string]uint64{"pass_non_vip": 1}},
		{name: "icmp frag-needed to one vip quoting another vip's packet is dropped", in: func(t *testing.T) []byte {
			return icmpTooBigTo(t, syn4.flow(), router4, mustAddr("203.0.113.30"))
		}, verdict: xdpDrop, stats: map[string]uint64{"drop_icmp_bad": 1}},
		{name: "icmp frag-needed to the vip goes to the flow's backend", in: func(t *testing.T) []byte { return icmpTooBig(t, syn4.flow(), router4) },
			verdict: xdpTx, want: toRing(web4.Key, syn4), stats: map[string]uint64{"icmp_too_big_fwd": 1, "tx_encap4": 1}},

		// SYN: no conntrack lookup; it goes to the ring and replaces a stale entry.
		{name: "syn with an existing entry goes to the ring and replaces the entry", setup: func(t *testing.T) {
			want := r.ringBackend(web4.Key, syn4.flow())
			stale = 1
			if want == 1 {
				stale = 2
			}
			ctPut(t, r.d, syn4.flow(), stale, 0)
		}, in: build(syn4), verdict: xdpTx, want: toRing(web4.Key, syn4),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}, check: ctRing(web4.Key, syn4)},
		{name: "ack after the syn hits the replaced entry", in: build(with(syn4, func(p *pkt) { p.flags = "A" })), verdict: xdpTx,
			want: toRing(web4.Key, syn4), stats: map[string]uint64{"ct_hit": 1, "tx_encap4": 1}},

		// Too big once encapsulated: ICMP back with the MTU that fits, nothing written.
		{name: "v4 with DF too big: frag-needed with mtu 1480", in: build(with(syn4, func(p *pkt) { p.sport, p.flags, p.payload, p.df = 50010, "A", 1441, true })),
			verdict: xdpTx, want: func(t *testing.T, in []byte) []byte { return tooBigReply(t, in, 1480) },
			stats: map[string]uint64{"ct_miss": 1, "tx_icmp_too_big": 1}, check: ctAbsent(with(syn4, func(p *pkt) { p.sport = 50010 }))},
		{name: "v4 with DF too big for 4in6: frag-needed with mtu 1460",
			in:      build(pkt{src: cli4, dst: "203.0.113.30", proto: tcp, sport: 50011, dport: 80, flags: "A", payload: 1421, df: true}),
			verdict: xdpTx, want: func(t *testing.T, in []byte) []byte { return tooBigReply(t, in, 1460) },
			stats: map[string]uint64{"ct_miss": 1, "tx_icmp_too_big": 1}},
		{name: "vlan-tagged v6 too big: packet-too-big keeps the tag", in: build(with(syn6, func(p *pkt) { p.sport, p.flags, p.payload, p.vlan = 50012, "A", 1401, 42 })),
			verdict: xdpTx, want: func(t *testing.T, in []byte) []byte { return tooBigReply(t, in, 1460) },
			stats: map[string]uint64{"ct_miss": 1, "tx_icmp_too_big": 1}, check: ctAbsent(with(syn6, func(p *pkt) { p.sport = 50012 }))},
		{name: "v4 with DF that fits is forwarded", in: build(with(syn4, func(p *pkt) { p.sport, p.flags, p.payload, p.df = 50013, "A", 1440, true })),
			verdict: xdpTx, want: toRing(web4.Key, with(syn4, func(p *pkt) { p.sport = 50013 })), stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},

		// Deny list: checked first, for every packet from the prefix, VIP or not.
		{name: "deny v4: vip packet from a denied source", setup: deny("203.0.113.96/29", "2001:db8:bad::/48"),
			in: build(with(syn4, func(p *pkt) { p.src = bad })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_deny": 1}, check: func(t *testing.T) {
				ctAbsent(with(syn4, func(p *pkt) { p.src = bad }))(t)
				denyDrops("203.0.113.96/29", 1)(t)
			}},
		{name: "deny v4: non-vip packet from a denied source", in: build(with(nonVIP4, func(p *pkt) { p.src = bad })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_deny": 1}, check: denyDrops("203.0.113.96/29", 2)},
		{name: "deny v4: malformed packet from a denied source is counted as denied", in: build(with(syn4, func(p *pkt) { p.src, p.flags = bad, "SF" })),
			verdict: xdpDrop, stats: map[string]uint64{"drop_deny": 1}},
		{name: "deny v4: the next address is served", in: build(with(syn4, func(p *pkt) { p.src = "203.0.113.104" })), verdict: xdpTx,
			want: toRing(web4.Key, with(syn4, func(p *pkt) { p.src = "203.0.113.104" })), stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "deny v6", in: build(with(syn6, func(p *pkt) { p.src = bad6 })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_deny": 1}, check: denyDrops("2001:db8:bad::/48", 1)},
		{name: "deny: a more specific prefix counts its own drops", setup: deny("203.0.113.99/32"),
			in: build(with(syn4, func(p *pkt) { p.src = bad })), verdict: xdpDrop,
			stats: map[string]uint64{"drop_deny": 1}, check: func(t *testing.T) {
				denyDrops("203.0.113.99/32", 1)(t)
				denyDrops("203.0.113.96/29", 3)(t)
			}},
		{name: "deny removed: served again", setup: func(t *testing.T) {
			if err := r.d.DenyDelete([]netip.Prefix{netip.MustParsePrefix("203.0.113.96/29"), netip.MustParsePrefix("203.0.113.99/32")}); err != nil {
				t.Fatal(err)
			}
		}, in: build(with(syn4, func(p *pkt) { p.src = bad })), verdict: xdpTx,
			want: toRing(web4.Key, with(syn4, func(p *pkt) { p.src = bad })), stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},

		// Allow lists.
		{name: "allow list: listed source is served", in: build(pkt{src: cli4, dst: "203.0.113.70", proto: tcp, sport: 50020, dport: 443, flags: "S"}),
			verdict: xdpTx, want: toRing(private.Key, pkt{src: cli4, dst: "203.0.113.70", proto: tcp, sport: 50020, dport: 443}),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "allow list: other source is dropped", in: build(pkt{src: "198.51.100.5", dst: "203.0.113.70", proto: tcp, sport: 50020, dport: 443, flags: "S"}),
			verdict: xdpDrop, stats: map[string]uint64{"drop_not_allowed": 1}, check: func(t *testing.T) {
				guardIs(private.Key, GuardCounters{Denied: 1})(t)
				ctAbsent(pkt{src: "198.51.100.5", dst: "203.0.113.70", proto: tcp, sport: 50020, dport: 443})(t)
			}},
		{name: "allow list: other vips are open", in: build(with(syn4, func(p *pkt) { p.src, p.sport = "198.51.100.5", 50021 })), verdict: xdpTx,
			want: toRing(web4.Key, with(syn4, func(p *pkt) { p.src, p.sport = "198.51.100.5", 50021 })), stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}},
		{name: "allow list v6: listed source is served", in: build(pkt{src: cli6, dst: "2001:db8:f::70", proto: tcp, sport: 50020, dport: 443, flags: "S"}),
			verdict: xdpTx, want: toRing(private6.Key, pkt{src: cli6, dst: "2001:db8:f::70", proto: tcp, sport: 50020, dport: 443}),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap6": 1}},
		{name: "allow list v6: other source is dropped", in: build(pkt{src: "2001:db8:d::1", dst: "2001:db8:f::70", proto: tcp, sport: 50020, dport: 443, flags: "S"}),
			verdict: xdpDrop, stats: map[string]uint64{"drop_not_allowed": 1}},
	}

	// Guard: rate 2, drop rate 4 (per CPU, per second). Five new flows in one window: two
	// tracked, two forwarded untracked, the fifth dropped; an established flow is not a
	// new flow and keeps going.
	gsyn := func(i int) pkt {
		return pkt{src: cli4, dst: "203.0.113.80", proto: tcp, sport: uint16(51000 + i), dport: 80, flags: "S"}
	}
	for i := 0; i < 5; i++ {
		c := pktCase{name: fmt.Sprintf("guard on: new flow %d", i+1), in: build(gsyn(i))}
		switch {
		case i < 2:
			c.verdict, c.want = xdpTx, toRing(guarded.Key, gsyn(i))
			c.stats = map[string]uint64{"ct_miss": 1, "tx_encap4": 1}
			c.check = ctRing(guarded.Key, gsyn(i))
		case i < 4:
			c.verdict, c.want = xdpTx, toRing(guarded.Key, gsyn(i))
			c.stats = map[string]uint64{"ct_miss": 1, "guard_untracked": 1, "tx_encap4": 1}
			c.check = ctAbsent(gsyn(i))
		default:
			c.verdict = xdpDrop
			c.stats = map[string]uint64{"ct_miss": 1, "guard_drop": 1}
			c.check = func(t *testing.T) {
				ctAbsent(gsyn(4))(t)
				guardIs(guarded.Key, GuardCounters{Untracked: 2, Dropped: 1})(t)
			}
		}
		c.setup = guardAt(guarded.Key, uint64(i))
		cases = append(cases, c)
	}
	cases = append(cases,
		pktCase{name: "guard on: a tracked flow's ack hits conntrack", in: build(with(gsyn(0), func(p *pkt) { p.flags = "A" })), verdict: xdpTx,
			want: toRing(guarded.Key, gsyn(0)), stats: map[string]uint64{"ct_hit": 1, "tx_encap4": 1}},
		pktCase{name: "guard above the drop rate: an untracked flow's ack is a new flow and is dropped (the trade-off)",
			setup: guardAt(guarded.Key, 5), in: build(with(gsyn(2), func(p *pkt) { p.flags = "A" })), verdict: xdpDrop, stats: map[string]uint64{"ct_miss": 1, "guard_drop": 1}},
		pktCase{name: "guard, next window: the untracked flow's ack reaches its backend by the ring and is tracked", setup: freshWindow(guarded.Key),
			in: build(with(gsyn(2), func(p *pkt) { p.flags = "A" })), verdict: xdpTx, want: toRing(guarded.Key, gsyn(2)),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}, check: ctRing(guarded.Key, gsyn(2))},
		pktCase{name: "guard off: every new flow is tracked", setup: func(t *testing.T) {
			if err := r.d.SetPolicy(guarded.Key, Policy{}); err != nil {
				t.Fatal(err)
			}
			freshWindow(guarded.Key)(t)
			for i := 10; i < 20; i++ {
				if v, _ := r.run(gsyn(i).build(t)); v != xdpTx {
					t.Fatalf("new flow %d: verdict %d", i, v)
				}
			}
		}, in: build(gsyn(20)), verdict: xdpTx, want: toRing(guarded.Key, gsyn(20)),
			stats: map[string]uint64{"ct_miss": 1, "tx_encap4": 1}, check: func(t *testing.T) {
				for i := 10; i <= 20; i++ {
					ctRing(guarded.Key, gsyn(i))(t)
				}
			}},
	)
	runTable(t, r, cases)
}
