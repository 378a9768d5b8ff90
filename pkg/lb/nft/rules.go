package nft

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

// The table and chains l4lb owns. Nothing outside the table is ever written.
const (
	TableName  = "l4lb"
	chainCount = "vip_count"     // filter, prerouting -150: per-VIP packets and bytes
	chainDNAT  = "vip_dnat"      // nat, prerouting -100: ring lookup and DNAT
	chainFwd   = "backend_count" // filter, forward 0: per-backend packets and bytes
	chainSNAT  = "backend_snat"  // nat, postrouting 100: masquerade, per-backend new flows
)

// Registers. The hash input starts at reg32 0 (8); the hash lands in reg32 12 (20); the
// ring lookup writes the backend address to the 16-byte register 1 (reg32 0..3).
const (
	regHashIn  = 8
	regHashOut = 20
	regAddr    = 1
	regMatch   = 1
)

// ipsDstNAT is conntrack's IPS_DST_NAT status bit.
const ipsDstNAT = 1 << 5

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

func chains(t *nftables.Table) []*nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return []*nftables.Chain{
		{Name: chainCount, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept},
		{Name: chainDNAT, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept},
		{Name: chainFwd, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept},
		{Name: chainSNAT, Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept},
	}
}

func is6(a netip.Addr) bool { return a.Unmap().Is6() }

// ringSet is a VIP's ring: a map from hash slot to backend address.
func ringSet(t *nftables.Table, name string, v6 bool) *nftables.Set {
	dt := nftables.TypeIPAddr
	if v6 {
		dt = nftables.TypeIP6Addr
	}
	return &nftables.Set{Table: t, Name: name, IsMap: true, KeyType: nftables.TypeMark,
		KeyByteOrder: binaryutil.NativeEndian, DataType: dt}
}

func ringName(vipID, gen uint32) string { return fmt.Sprintf("ring%d_%d", vipID, gen) }

func parseRingName(s string) (vipID, gen uint32, ok bool) {
	rest, ok := strings.CutPrefix(s, "ring")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(rest, "_")
	if !ok {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 10, 32)
	y, err2 := strconv.ParseUint(b, 10, 32)
	return uint32(x), uint32(y), err1 == nil && err2 == nil
}

// ringElements turns a Maglev table (backend id per slot, 0: none) into map elements.
func ringElements(table []uint32, addrs map[uint32]netip.Addr) []nftables.SetElement {
	els := make([]nftables.SetElement, 0, len(table))
	for slot, id := range table {
		if id == 0 {
			continue
		}
		els = append(els, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(uint32(slot)), Val: addrBytes(addrs[id])})
	}
	return els
}

func addrBytes(a netip.Addr) []byte { return a.Unmap().AsSlice() }

// vipTag is what a VIP's rules carry as their comment: it names the VIP, its id, flags
// and ring, so a restarted daemon reads them back.
type vipTag struct {
	Kind  string // "vip" (dnat), "count", "nobackend"
	Key   lb.VIPKey
	ID    uint32
	Flags lb.VIPFlags
	Ring  string
}

func (t vipTag) String() string {
	return fmt.Sprintf("l4lb %s %s %d %d id=%d flags=%d ring=%s", t.Kind, t.Key.Addr.Unmap(), t.Key.Port, t.Key.Proto, t.ID, t.Flags, t.Ring)
}

// backendTag is a backend rule's comment.
type backendTag struct {
	Kind string // "backend" (snat), "bcount" (fwd)
	ID   uint32
	Addr netip.Addr
}

func (t backendTag) String() string {
	return fmt.Sprintf("l4lb %s %d %s", t.Kind, t.ID, t.Addr.Unmap())
}

// parseTag reads a rule comment back; ok is false for a rule that is not ours.
func parseTag(s string) (v vipTag, b backendTag, isVIP bool, ok bool) {
	f := strings.Fields(s)
	if len(f) < 2 || f[0] != "l4lb" {
		return v, b, false, false
	}
	switch f[1] {
	case "vip", "count", "nobackend":
		if len(f) != 8 {
			return v, b, false, false
		}
		a, err := netip.ParseAddr(f[2])
		port, err2 := strconv.ParseUint(f[3], 10, 16)
		proto, err3 := strconv.ParseUint(f[4], 10, 8)
		id, err4 := strconv.ParseUint(strings.TrimPrefix(f[5], "id="), 10, 32)
		flags, err5 := strconv.ParseUint(strings.TrimPrefix(f[6], "flags="), 10, 32)
		ring, okRing := strings.CutPrefix(f[7], "ring=")
		if err != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || !okRing {
			return v, b, false, false
		}
		return vipTag{Kind: f[1], Key: lb.VIPKey{Addr: a, Port: uint16(port), Proto: lb.Proto(proto)}, ID: uint32(id), Flags: lb.VIPFlags(flags), Ring: ring}, b, true, true
	case "backend", "bcount":
		if len(f) != 4 {
			return v, b, false, false
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		a, err2 := netip.ParseAddr(f[3])
		if err != nil || err2 != nil {
			return v, b, false, false
		}
		return v, backendTag{Kind: f[1], ID: uint32(id), Addr: a}, false, true
	}
	return v, b, false, false
}

func comment(s string) []byte { return userdata.AppendString(nil, userdata.TypeComment, s) }

func ruleComment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// matchVIP: meta nfproto, daddr, l4proto and (unless 0) the destination port.
func matchVIP(k lb.VIPKey) []expr.Any {
	a := k.Addr.Unmap()
	fam, off, ln := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if a.Is6() {
		fam, off, ln = unix.NFPROTO_IPV6, 24, 16
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: regMatch},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regMatch, Data: []byte{fam}},
		&expr.Payload{DestRegister: regMatch, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: ln},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regMatch, Data: a.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regMatch},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regMatch, Data: []byte{byte(k.Proto)}},
	}
	if k.Port != 0 {
		e = append(e,
			&expr.Payload{DestRegister: regMatch, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: regMatch, Data: binaryutil.BigEndian.PutUint16(k.Port)})
	}
	return e
}

// hashExprs computes the ring slot exactly as XDP does (bpf/flowhash.h, ring_slot in
// bpf/ring.h): the kernel's jhash() over saddr, daddr and the two ports as they sit in
// the transport header (sport zeroed for FlagHashNoSourcePort), seeded with the protocol,
// scaled to the ring size by reciprocal_scale. nft's jhash hashes the registers' bytes,
// which is what the XDP side's jhash_3words/jhash_9words compute for 12 and 36 bytes.
func hashExprs(k lb.VIPKey, flags lb.VIPFlags, ringSize uint32) []expr.Any {
	saddr, daddr, ln, portsReg := uint32(12), uint32(16), uint32(4), uint32(regHashIn+2)
	if is6(k.Addr) {
		saddr, daddr, ln, portsReg = 8, 24, 16, regHashIn+8
	}
	e := []expr.Any{
		&expr.Payload{DestRegister: regHashIn, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: ln},
		&expr.Payload{DestRegister: regHashIn + ln/4, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: ln},
		&expr.Payload{DestRegister: portsReg, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 4},
	}
	if flags&lb.FlagHashNoSourcePort != 0 {
		e = append(e, &expr.Bitwise{SourceRegister: portsReg, DestRegister: portsReg, Len: 4,
			Mask: []byte{0, 0, 0xff, 0xff}, Xor: []byte{0, 0, 0, 0}})
	}
	return append(e, &expr.Hash{SourceRegister: regHashIn, DestRegister: regHashOut, Length: 2*ln + 4,
		Modulus: ringSize, Seed: uint32(k.Proto), Type: expr.HashTypeJenkins})
}

func natFamily(a netip.Addr) uint32 {
	if is6(a) {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

// vipRules are a VIP's rules: the counting rule, the DNAT through the ring, and the drop
// of new flows whose slot names no backend (every backend drained or down).
func vipRules(t *nftables.Table, tag vipTag, ring *nftables.Set, ringSize uint32) (count, dnat, drop *nftables.Rule) {
	byName := map[string]*nftables.Chain{}
	for _, c := range chains(t) {
		byName[c.Name] = c
	}
	ct := tag
	ct.Kind = "count"
	count = &nftables.Rule{Table: t, Chain: byName[chainCount], UserData: comment(ct.String()),
		Exprs: append(matchVIP(tag.Key), &expr.Counter{})}
	e := append(matchVIP(tag.Key), &expr.Counter{})
	e = append(e, hashExprs(tag.Key, tag.Flags, ringSize)...)
	e = append(e,
		&expr.Lookup{SourceRegister: regHashOut, DestRegister: regAddr, IsDestRegSet: true, SetName: ring.Name, SetID: ring.ID},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily(tag.Key.Addr), RegAddrMin: regAddr})
	tag.Kind = "vip"
	dnat = &nftables.Rule{Table: t, Chain: byName[chainDNAT], UserData: comment(tag.String()), Exprs: e}
	dt := tag
	dt.Kind = "nobackend"
	drop = &nftables.Rule{Table: t, Chain: byName[chainDNAT], UserData: comment(dt.String()),
		Exprs: append(matchVIP(tag.Key), &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})}
	return count, dnat, drop
}

// matchOurs matches packets of DNATed flows whose current destination is the backend.
// (Matching the original destination against the VIP set would be tighter, but
// google/nftables encodes ct's direction attribute as a u32 where the kernel dumps a u8,
// so such rules could not be read back.) docs/architecture.md says so.
func matchOurs(b netip.Addr) []expr.Any {
	a := b.Unmap()
	fam, off := byte(unix.NFPROTO_IPV4), uint32(16)
	if a.Is6() {
		fam, off = unix.NFPROTO_IPV6, 24
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: regMatch},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regMatch, Data: []byte{fam}},
		&expr.Ct{Key: expr.CtKeySTATUS, Register: regMatch},
		&expr.Bitwise{SourceRegister: regMatch, DestRegister: regMatch, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regMatch, Data: []byte{0, 0, 0, 0}},
		&expr.Payload{DestRegister: regMatch, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(len(a.AsSlice()))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regMatch, Data: a.AsSlice()},
	}
}

// backendRules: the forward-chain counter and the masquerade (with its new-flow counter).
func backendRules(t *nftables.Table, id uint32, a netip.Addr) (fwd, snat *nftables.Rule) {
	byName := map[string]*nftables.Chain{}
	for _, c := range chains(t) {
		byName[c.Name] = c
	}
	fwd = &nftables.Rule{Table: t, Chain: byName[chainFwd], UserData: comment(backendTag{"bcount", id, a}.String()),
		Exprs: append(matchOurs(a), &expr.Counter{})}
	snat = &nftables.Rule{Table: t, Chain: byName[chainSNAT], UserData: comment(backendTag{"backend", id, a}.String()),
		Exprs: append(matchOurs(a), &expr.Counter{}, &expr.Masq{})}
	return fwd, snat
}
