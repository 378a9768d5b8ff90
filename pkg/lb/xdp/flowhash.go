package xdp

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/l4lb/l4lb/internal/bpfobj"
	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/lb"
)

// This file mirrors bpf/jhash.h and flow_hash() in bpf/flowhash.h, so that Go can answer
// "which ring slot does this flow hash to?" exactly as the data plane does.

const jhashInitval = limits.JhashInitval

func jhashMix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

// jhashFinal returns b and c after the final mix (the hash is c; bpf/jhash.h's *64
// variants return b << 32 | c).
func jhashFinal(a, b, c uint32) (uint32, uint32) {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return b, c
}

func jhash3Words64(a, b, c, initval uint32) uint64 {
	a += jhashInitval + (3 << 2) + initval
	b += jhashInitval + (3 << 2) + initval
	c += jhashInitval + (3 << 2) + initval
	hb, hc := jhashFinal(a, b, c)
	return uint64(hb)<<32 | uint64(hc)
}

func jhash9Words64(k [9]uint32, initval uint32) uint64 {
	a := uint32(jhashInitval + (9 << 2) + initval)
	b, c := a, a
	a += k[0]
	b += k[1]
	c += k[2]
	a, b, c = jhashMix(a, b, c)
	a += k[3]
	b += k[4]
	c += k[5]
	a, b, c = jhashMix(a, b, c)
	a += k[6]
	b += k[7]
	c += k[8]
	hb, hc := jhashFinal(a, b, c)
	return uint64(hb)<<32 | uint64(hc)
}

// Flow is a client's 5-tuple as it reaches a VIP.
type Flow struct {
	Src, Dst     netip.Addr
	Sport, Dport uint16
	Proto        lb.Proto
}

// flowWords64 mirrors flow_words64 in bpf/flowhash.h: jhash over the addresses and
// ports seeded with seed, as b << 32 | c. noSport zeroes the source port.
func flowWords64(f Flow, noSport bool, seed uint32) uint64 {
	src, fam := bpfobj.Addr16(f.Src)
	dst, _ := bpfobj.Addr16(f.Dst)
	// The data plane loads the two network-order ports as one little-endian word.
	var pb [4]byte
	binary.BigEndian.PutUint16(pb[0:], f.Sport)
	binary.BigEndian.PutUint16(pb[2:], f.Dport)
	if noSport {
		pb[0], pb[1] = 0, 0
	}
	ports := binary.LittleEndian.Uint32(pb[:])
	if fam == familyV4 {
		return jhash3Words64(binary.LittleEndian.Uint32(src[:4]), binary.LittleEndian.Uint32(dst[:4]), ports, seed)
	}
	var k [9]uint32
	for i := 0; i < 4; i++ {
		k[i] = binary.LittleEndian.Uint32(src[i*4:])
		k[4+i] = binary.LittleEndian.Uint32(dst[i*4:])
	}
	k[8] = ports
	return jhash9Words64(k, seed)
}

// FlowHash returns the hash the data plane computes for f (bpf/xdp_lb.c flow_hash).
func FlowHash(f Flow, flags lb.VIPFlags) uint32 {
	return uint32(flowWords64(f, flags&lb.FlagHashNoSourcePort != 0, uint32(f.Proto)))
}

// SlotMapping is how a flow hash maps to a ring slot (bpf/ring.h ring_slot).
type SlotMapping uint8

const (
	// SlotModulo: hash % size. The default, so nodes that keep the default agree on
	// each flow's slot whatever version each runs (a fleet upgraded node by node).
	SlotModulo SlotMapping = iota
	// SlotScaled: the kernel's reciprocal_scale, ((u64)hash * size) >> 32, which is what
	// nftables' "jhash ... mod size" computes: XDP nodes with it pick the same backend
	// as nftables nodes (pkg/lb/nft) for the same flow.
	SlotScaled
)

// ParseSlotMapping reads the config's name of a slot mapping.
func ParseSlotMapping(s string) (SlotMapping, error) {
	switch s {
	case "", "modulo":
		return SlotModulo, nil
	case "scaled":
		return SlotScaled, nil
	}
	return 0, fmt.Errorf("slot mapping %q: want modulo or scaled", s)
}

func (m SlotMapping) String() string {
	if m == SlotScaled {
		return "scaled"
	}
	return "modulo"
}

// RingSlot returns the ring slot a flow hash selects in a ring of size slots, as the
// data plane computes it with mapping m.
func RingSlot(m SlotMapping, hash, size uint32) uint32 {
	if m == SlotScaled {
		return uint32(uint64(hash) * uint64(size) >> 32)
	}
	return hash % size
}
