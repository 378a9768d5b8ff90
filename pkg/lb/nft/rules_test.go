package nft

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// dump writes a rule's expressions one a line, byte slices in hex: what is sent to the
// kernel, in a form a reviewer can read.
func dump(r *nftables.Rule) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rule %s comment %q\n", r.Chain.Name, ruleComment(r))
	for _, e := range r.Exprs {
		v := reflect.ValueOf(e).Elem()
		fmt.Fprintf(&b, "  %s", v.Type().Name())
		for i := range v.NumField() {
			f := v.Field(i)
			if f.IsZero() {
				continue
			}
			if bs, ok := f.Interface().([]byte); ok {
				fmt.Fprintf(&b, " %s=%x", v.Type().Field(i).Name, bs)
				continue
			}
			fmt.Fprintf(&b, " %s=%v", v.Type().Field(i).Name, f.Interface())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestRulesGolden: the rules for an IPv4 and an IPv6 VIP (one without the source port in
// the hash, one for any port) and a backend, as they go to the kernel.
func TestRulesGolden(t *testing.T) {
	tb := table()
	var out strings.Builder
	for _, tag := range []vipTag{
		{Key: lb.VIPKey{Addr: netip.MustParseAddr("198.51.100.10"), Port: 80, Proto: lb.ProtoTCP}, ID: 0, Ring: "ring0_3"},
		{Key: lb.VIPKey{Addr: netip.MustParseAddr("198.51.100.10"), Port: 53, Proto: lb.ProtoUDP}, ID: 1, Flags: lb.FlagHashNoSourcePort, Ring: "ring1_0"},
		{Key: lb.VIPKey{Addr: netip.MustParseAddr("2001:db8:f::10"), Proto: lb.ProtoUDP}, ID: 2, Ring: "ring2_0"},
	} {
		count, dnat, drop := vipRules(tb, tag, ringSet(tb, tag.Ring, tag.Key.Addr.Is6()), 65537)
		for _, r := range []*nftables.Rule{count, dnat, drop} {
			out.WriteString(dump(r))
		}
	}
	for _, a := range []string{"203.0.113.6", "2001:db8:b1::2"} {
		fwd, snat := backendRules(tb, 7, netip.MustParseAddr(a))
		out.WriteString(dump(fwd))
		out.WriteString(dump(snat))
	}
	golden(t, "rules.golden", out.String())
}

func TestTagsRoundTrip(t *testing.T) {
	v := vipTag{Kind: "vip", Key: lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::1"), Port: 0, Proto: lb.ProtoUDP}, ID: 12, Flags: 1, Ring: "ring12_4"}
	got, _, isVIP, ok := parseTag(v.String())
	if !ok || !isVIP || got != v {
		t.Errorf("vip tag %q read back as %+v (ok %v)", v, got, ok)
	}
	be := backendTag{Kind: "backend", ID: 9, Addr: netip.MustParseAddr("203.0.113.9")}
	_, gotB, isVIP, ok := parseTag(be.String())
	if !ok || isVIP || gotB != be {
		t.Errorf("backend tag %q read back as %+v", be, gotB)
	}
	for _, s := range []string{"", "kube-proxy rule", "l4lb vip x 1 2 id=3 flags=0 ring=r", "l4lb backend x y"} {
		if _, _, _, ok := parseTag(s); ok {
			t.Errorf("%q read as ours", s)
		}
	}
	if id, gen, ok := parseRingName(ringName(5, 17)); !ok || id != 5 || gen != 17 {
		t.Errorf("ring name: %d %d %v", id, gen, ok)
	}
}

// kernelJhash is the kernel's jhash() (include/linux/jhash.h) over bytes, as nft's hash
// expression calls it on the registers.
func kernelJhash(k []byte, initval uint32) uint32 {
	a := 0xdeadbeef + uint32(len(k)) + initval
	b, c := a, a
	rot := bits.RotateLeft32
	for len(k) > 12 {
		a += binary.LittleEndian.Uint32(k)
		b += binary.LittleEndian.Uint32(k[4:])
		c += binary.LittleEndian.Uint32(k[8:])
		a -= c
		a ^= rot(c, 4)
		c += b
		b -= a
		b ^= rot(a, 6)
		a += c
		c -= b
		c ^= rot(b, 8)
		b += a
		a -= c
		a ^= rot(c, 16)
		c += b
		b -= a
		b ^= rot(a, 19)
		a += c
		c -= b
		c ^= rot(b, 4)
		b += a
		k = k[12:]
	}
	if len(k) == 0 {
		return c
	}
	var tail [12]byte
	copy(tail[:], k)
	a += binary.LittleEndian.Uint32(tail[:])
	b += binary.LittleEndian.Uint32(tail[4:])
	c += binary.LittleEndian.Uint32(tail[8:])
	c ^= b
	c -= rot(b, 14)
	a ^= c
	a -= rot(c, 11)
	b ^= a
	b -= rot(a, 25)
	c ^= b
	c -= rot(b, 16)
	a ^= c
	a -= rot(c, 4)
	b ^= a
	b -= rot(a, 14)
	c ^= b
	c -= rot(b, 24)
	return c
}

// TestHashMatchesXDP: what the nftables rule hashes (the kernel's jhash over saddr,
// daddr and the four port bytes, sport zeroed for no-source-port, seeded with the
// protocol, scaled by reciprocal_scale) equals XDP's flow hash and ring slot, for random
// IPv4 and IPv6 flows.
func TestHashMatchesXDP(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		six := i%2 == 1
		addr := func() netip.Addr {
			if six {
				var a [16]byte
				for j := range a {
					a[j] = byte(rng.Uint32())
				}
				return netip.AddrFrom16(a)
			}
			return netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		}
		f := xdp.Flow{Src: addr(), Dst: addr(), Sport: uint16(rng.Uint32()), Dport: uint16(rng.Uint32()), Proto: lb.ProtoTCP}
		if i%3 == 0 {
			f.Proto = lb.ProtoUDP
		}
		flags := lb.VIPFlags(0)
		if i%5 == 0 {
			flags = lb.FlagHashNoSourcePort
		}
		var regs []byte
		regs = append(append(regs, f.Src.AsSlice()...), f.Dst.AsSlice()...)
		regs = binary.BigEndian.AppendUint16(regs, f.Sport)
		regs = binary.BigEndian.AppendUint16(regs, f.Dport)
		if flags != 0 {
			regs[len(regs)-4], regs[len(regs)-3] = 0, 0 // the rule's bitwise mask
		}
		h := kernelJhash(regs, uint32(f.Proto))
		if want := xdp.FlowHash(f, flags); h != want {
			t.Fatalf("flow %+v flags %d: nft hashes %#x, xdp %#x", f, flags, h, want)
		}
		const size = 65537
		if nftSlot, xdpSlot := uint32(uint64(h)*size>>32), xdp.RingSlot(xdp.SlotScaled, h, size); nftSlot != xdpSlot {
			t.Fatalf("slot: nft %d, xdp %d", nftSlot, xdpSlot)
		}
	}
}
