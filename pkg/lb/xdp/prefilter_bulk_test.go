package xdp

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/lb"
)

// millionPrefixes returns n distinct IPv4 prefixes (/16 to /32) drawn from a seeded
// generator, none covering exclude. They are map keys only: no traffic is sent to them.
func millionPrefixes(n int, exclude ...netip.Addr) []netip.Prefix {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := make(map[netip.Prefix]bool, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		var a [4]byte
		v := rng.Uint32()
		a[0], a[1], a[2], a[3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		p := netip.PrefixFrom(netip.AddrFrom4(a), 16+rng.IntN(17)).Masked()
		skip := seen[p]
		for _, x := range exclude {
			skip = skip || p.Contains(x)
		}
		if !skip {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func TestPrivilegedDenyBulkLoad(t *testing.T) {
	r := newRig(t, Options{})
	web := key("203.0.113.10", 80, tcp)
	r.setVIP(lb.VIP{Key: web, Backends: backends(1, "198.51.100.11", "198.51.100.12")})
	ps := millionPrefixes(shortN(1_000_000, 100_000), mustAddr(cli4)) // a million on the host
	start := time.Now()
	if err := r.d.DenyAdd(ps); err != nil {
		t.Fatal(err)
	}
	t.Logf("loaded %d prefixes in %s", len(ps), time.Since(start).Round(time.Millisecond))
	start = time.Now()
	list, err := r.d.DenyList()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("listed %d prefixes in %s", len(list), time.Since(start).Round(time.Millisecond))
	if len(list) != len(ps) {
		t.Fatalf("deny list holds %d prefixes, want %d", len(list), len(ps))
	}
	// Loading again adds nothing and keeps the counters.
	p0 := ps[12345]
	if v, _ := r.run(pkt{src: p0.Addr().String(), dst: "203.0.113.10", proto: tcp, sport: 1, dport: 80, flags: "S"}.build(t)); v != xdpDrop {
		t.Fatalf("packet from %s (listed): verdict %d, want drop", p0, v)
	}
	if err := r.d.DenyAdd(ps[:20000]); err != nil {
		t.Fatal(err)
	}
	if err := r.d.DenyAdd([]netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), {}}); err == nil {
		t.Fatal("an invalid prefix was accepted")
	}
	list, err = r.d.DenyList()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(ps) {
		t.Fatalf("after reloading and a rejected add: %d prefixes, want %d", len(list), len(ps))
	}
	for _, e := range list {
		if e.Prefix == p0 && e.Drops != 1 {
			t.Errorf("%s: %d drops after reloading, want 1", p0, e.Drops)
		}
	}
	if v, _ := r.run(pkt{src: cli4, dst: "203.0.113.10", proto: tcp, sport: 1, dport: 80, flags: "S"}.build(t)); v != xdpTx {
		t.Fatalf("packet from %s (not listed): verdict %d, want tx", cli4, v)
	}
}
