package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// ErrPacket: Trace was given no TCP or UDP packet of one address family.
var ErrPacket = errors.New("bad packet")

// Packet is a packet to trace: a client's flow as it reaches the node and, for TCP, its
// flags (letters of S A F R P U).
type Packet struct {
	xdp.Flow
	Flags string
}

// RuleVerdict is what l4lb's vip_dnat chain does with a packet that reaches it.
type RuleVerdict string

const (
	// VerdictDNAT: a VIP's rule translated the destination to the ring slot's backend.
	VerdictDNAT RuleVerdict = "dnat"
	// VerdictDrop: the VIP's "nobackend" rule dropped it (its slot names no backend).
	VerdictDrop RuleVerdict = "drop"
	// VerdictPass: no rule of l4lb's matched; the packet goes on as addressed.
	VerdictPass RuleVerdict = "pass"
)

// Conntrack says what the kernel's conntrack does with a packet before the NAT rules.
type Conntrack string

const (
	// CTRules: the packet is the first of a new conntrack entry, so the NAT rules decide
	// (a UDP packet or a TCP SYN without an entry, a SYN that reopens a closed entry, a
	// mid-stream ACK conntrack picks up).
	CTRules Conntrack = "rules"
	// CTEntryFollowed: an entry exists and the packet follows it; the rules are not read.
	CTEntryFollowed Conntrack = "entry"
	// CTInvalid: conntrack marks the packet invalid and makes no entry; the NAT rules
	// are not read and the packet goes on untranslated.
	CTInvalid Conntrack = "invalid"
)

// Trace is what the live ruleset, read back from the kernel, and the kernel's conntrack
// do with one packet. Nothing is written.
type Trace struct {
	// Matched: a VIP's rule of the vip_dnat chain matches the packet (the first in chain
	// order). Others are the VIPs on the packet's destination address that do not match
	// it (another port or protocol).
	Matched bool
	VIP     lb.VIPKey
	VIPID   uint32
	Flags   lb.VIPFlags
	Others  []lb.VIPKey
	// Ring is the map the rule looks the slot up in; RingSize the modulus of the rule's
	// hash; Hash the rule's jhash of the packet before scaling, Slot the slot it picks.
	Ring     string
	RingSize uint32
	Hash     uint32
	Slot     uint32
	// Backend is the ring element at Slot (invalid: the slot names none); BackendID its
	// id, from the backend's rules (0: none found).
	Backend   netip.Addr
	BackendID uint32
	// Verdict is what the rules do with the packet as the first of a flow; Rule the
	// comment and handle of the rule that decides (empty for VerdictPass).
	Verdict RuleVerdict
	Rule    string
	// Masquerade is the comment and handle of the backend's masquerade rule in
	// backend_snat (empty: none).
	Masquerade string
	// Altered lists l4lb's rules whose expressions are not what l4lb writes (changed by
	// someone else): the computed slot is not vouched for.
	Altered []string
	// Conntrack is what conntrack does with the packet: CTRules, CTEntryFollowed or
	// CTInvalid; CTWhy says why, in words. Entry is the flow's entry (EntryFound) as
	// ctnetlink answered; CTErr why the entry could not be looked up.
	Conntrack  Conntrack
	CTWhy      string
	EntryFound bool
	Entry      CTEntry
	CTErr      string
}

// Trace answers where the packet goes: the VIP rule that matches it in the live
// vip_dnat chain (in chain order, as the kernel evaluates it), the slot the rule's jhash
// computes (xdp.FlowHash, scaled as nft's "jhash ... mod" scales), the ring element at
// that slot, the verdict, the masquerade rule, and whether the kernel's conntrack lets
// the rules decide at all. It reads only.
func (d *Dataplane) Trace(p Packet) (Trace, error) {
	p.Src, p.Dst = p.Src.Unmap(), p.Dst.Unmap()
	var tr Trace
	switch {
	case !p.Src.IsValid() || !p.Dst.IsValid():
		return tr, fmt.Errorf("%w: source and destination addresses are needed", ErrPacket)
	case p.Src.Is4() != p.Dst.Is4():
		return tr, fmt.Errorf("%w: source %s and destination %s are of different families", ErrPacket, p.Src, p.Dst)
	case p.Proto != lb.ProtoTCP && p.Proto != lb.ProtoUDP:
		return tr, fmt.Errorf("%w: protocol %s: the rules balance tcp and udp", ErrPacket, p.Proto)
	}
	d.mu.Lock()
	c, err := d.conn()
	if err != nil {
		d.mu.Unlock()
		return tr, err
	}
	s, err := d.read(c)
	if err == nil {
		err = d.traceRules(c, s, p, &tr)
	}
	d.mu.Unlock()
	if err != nil {
		return tr, fmt.Errorf("trace %s: %w", p.Flow.Dst, err)
	}
	e, found, err := lookupCT(d.opts.NetNS, p)
	if err != nil {
		tr.CTErr = err.Error()
	}
	tr.EntryFound, tr.Entry = found, e
	tr.Conntrack, tr.CTWhy = conntrackDecides(p, found, e, d.tcpLoose())
	return tr, nil
}

func (d *Dataplane) traceRules(c *nftables.Conn, s snapshot, p Packet, tr *Trace) error {
	tr.Verdict = VerdictPass
	if !s.tableOK || !s.chainsOK() {
		return nil
	}
	for _, r := range s.rules[chainDNAT] {
		k := r.vip.Key
		if r.vip.Kind == "" || k.Addr != p.Dst {
			continue
		}
		if k.Proto != p.Proto || (k.Port != 0 && k.Port != p.Dport) {
			if r.vip.Kind == "vip" {
				tr.Others = append(tr.Others, k)
			}
			continue
		}
		switch r.vip.Kind {
		case "vip":
			if err := d.traceVIP(c, s, p, r, tr); err != nil {
				return err
			}
			if tr.Backend.IsValid() {
				tr.Verdict, tr.Rule = VerdictDNAT, describe(r.r)
				return nil
			}
			// The lookup misses: the kernel goes on to the next rule.
		case "nobackend":
			// (Also when the VIP's dnat rule is gone: the drop rule still drops.)
			tr.Matched, tr.VIP, tr.VIPID, tr.Flags = true, k, r.vip.ID, r.vip.Flags
			if want := vipDropExprs(d.t, r.vip); !sameExprs(r.r.Exprs, want) {
				tr.Altered = append(tr.Altered, describe(r.r))
			}
			tr.Verdict, tr.Rule = VerdictDrop, describe(r.r)
			return nil
		}
	}
	return nil
}

// traceVIP computes the matching VIP rule's slot and reads the ring element there, with
// the ring size, seed and ring name the live rule holds.
func (d *Dataplane) traceVIP(c *nftables.Conn, s snapshot, p Packet, r rule, tr *Trace) error {
	tag := r.vip
	var h *expr.Hash
	var lk *expr.Lookup
	for _, e := range r.r.Exprs {
		switch e := e.(type) {
		case *expr.Hash:
			h = e
		case *expr.Lookup:
			lk = e
		}
	}
	// The VIP of the last rule the packet matched is the one that decides.
	tr.Matched, tr.VIP, tr.VIPID, tr.Flags = true, tag.Key, tag.ID, tag.Flags
	tr.Ring, tr.RingSize, tr.Hash, tr.Slot = "", 0, 0, 0
	if h == nil || lk == nil || h.Modulus == 0 {
		tr.Altered = append(tr.Altered, describe(r.r))
		return nil
	}
	tr.Ring, tr.RingSize = lk.SetName, h.Modulus
	// The rule must be exactly what l4lb writes for its tag, with the live ring size and
	// ring: then the kernel computes xdp.FlowHash for it (TestHashMatchesXDP).
	rs := ringSet(d.t, lk.SetName, is6(tag.Key.Addr))
	_, want, _ := vipRules(d.t, tag, rs, h.Modulus)
	if !sameExprs(r.r.Exprs, want.Exprs) {
		tr.Altered = append(tr.Altered, describe(r.r))
	}
	tr.Hash = xdp.FlowHash(p.Flow, tag.Flags)
	tr.Slot = xdp.RingSlot(xdp.SlotScaled, tr.Hash, h.Modulus)
	if !s.sets[lk.SetName] {
		return nil
	}
	key := binaryutil.NativeEndian.PutUint32(tr.Slot)
	val, ok, err := ringElement(d.opts.NetNS, TableName, lk.SetName, key)
	if err != nil {
		// A kernel that cannot get one element: read the whole ring.
		els, err := c.GetSetElements(rs)
		if err != nil {
			return fmt.Errorf("read ring %s: %w", lk.SetName, err)
		}
		for _, el := range els {
			if string(el.Key) == string(key) {
				val, ok = el.Val, true
				break
			}
		}
	}
	if ok {
		tr.Backend, _ = netip.AddrFromSlice(val)
	}
	if !tr.Backend.IsValid() {
		return nil
	}
	for _, br := range s.rules[chainSNAT] {
		if br.be.Kind == "backend" && br.be.Addr == tr.Backend {
			tr.BackendID, tr.Masquerade = br.be.ID, describe(br.r)
		}
	}
	if tr.BackendID == 0 {
		for _, br := range s.rules[chainFwd] {
			if br.be.Kind == "bcount" && br.be.Addr == tr.Backend {
				tr.BackendID = br.be.ID
			}
		}
	}
	return nil
}

func vipDropExprs(t *nftables.Table, tag vipTag) []expr.Any {
	_, _, drop := vipRules(t, tag, ringSet(t, tag.Ring, is6(tag.Key.Addr)), 1)
	return drop.Exprs
}

// sameExprs compares a rule read back with the one l4lb would write, ignoring what the
// kernel fills in or writes its own way: counter values, set ids, register numbers (the
// kernel dumps a 32-bit register that starts a 16-byte one by the 16-byte one's number)
// and a NAT range's end where the rule gave only its start.
func sameExprs(got, want []expr.Any) bool {
	norm := func(es []expr.Any) []expr.Any {
		out := make([]expr.Any, 0, len(es))
		for _, e := range es {
			v := reflect.New(reflect.TypeOf(e).Elem())
			v.Elem().Set(reflect.ValueOf(e).Elem())
			n := v.Interface().(expr.Any)
			switch n := n.(type) {
			case *expr.Counter:
				*n = expr.Counter{}
			case *expr.Lookup:
				n.SetID = 0
			case *expr.NAT:
				if n.RegAddrMax == 0 {
					n.RegAddrMax = n.RegAddrMin
				}
				if n.RegProtoMax == 0 {
					n.RegProtoMax = n.RegProtoMin
				}
			}
			st := v.Elem()
			for i := range st.NumField() {
				f, name := st.Field(i), st.Type().Field(i).Name
				if f.Kind() == reflect.Uint32 && (strings.Contains(name, "Register") || strings.HasPrefix(name, "Reg")) {
					f.SetUint(uint64(reg32(uint32(f.Uint()))))
				}
			}
			out = append(out, n)
		}
		return out
	}
	return reflect.DeepEqual(norm(got), norm(want))
}

// reg32 is the 32-bit register a register number starts at (NFT_REG_1..4 are 16 bytes,
// NFT_REG32_00..15 are numbered from 8); 0, the verdict register, stays 0.
func reg32(r uint32) uint32 {
	switch {
	case r >= 1 && r <= 4:
		return 1 + (r-1)*4
	case r >= 8:
		return 1 + r - 8
	}
	return r
}

func describe(r *nftables.Rule) string {
	return fmt.Sprintf("%s %q handle %d", r.Chain.Name, ruleComment(r), r.Handle)
}

// tcpLoose reads net.netfilter.nf_conntrack_tcp_loose of the node (-1: not known, as in
// a namespace given by fd).
func (d *Dataplane) tcpLoose() int {
	if d.opts.NetNS != 0 {
		return -1
	}
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_tcp_loose")
	if err != nil {
		return -1
	}
	switch strings.TrimSpace(string(b)) {
	case "0":
		return 0
	case "1":
		return 1
	}
	return -1
}

// TCP flags as nf_conntrack's TCP tracker sees them (PSH, ECE and CWR do not count).
const (
	tcpFIN = 1 << iota
	tcpSYN
	tcpRST
	tcpPSH
	tcpACK
	tcpURG
)

func tcpFlags(s string) uint8 {
	var f uint8
	for _, c := range s {
		f |= map[rune]uint8{'F': tcpFIN, 'S': tcpSYN, 'R': tcpRST, 'P': tcpPSH, 'A': tcpACK, 'U': tcpURG}[c]
	}
	return f
}

// tcpValid is nf_conntrack_proto_tcp.c's tcp_valid_flags: the combinations (PSH
// ignored) conntrack does not call invalid on sight.
var tcpValid = map[uint8]bool{
	tcpSYN: true, tcpSYN | tcpURG: true, tcpSYN | tcpACK: true, tcpRST: true, tcpRST | tcpACK: true,
	tcpFIN | tcpACK: true, tcpFIN | tcpACK | tcpURG: true, tcpACK: true, tcpACK | tcpURG: true,
}

// tcpNext is nf_conntrack_proto_tcp.c's tcp_conntracks for the original direction (the
// client's packets): the state a packet of each kind moves an entry to from each state
// (NONE: no entry), "IV" invalid, "IG" ignored (the entry stays as it is).
var tcpNext = map[string][10]string{
	//        NONE  SYN_SENT SYN_RECV ESTABLISHED FIN_WAIT CLOSE_WAIT LAST_ACK TIME_WAIT CLOSE SYN_SENT2
	"syn":    {"SYN_SENT", "SYN_SENT", "IG", "IG", "IG", "IG", "IG", "SYN_SENT", "SYN_SENT", "SYN_SENT2"},
	"synack": {"IV", "IV", "SYN_RECV", "IV", "IV", "IV", "IV", "IV", "IV", "SYN_RECV"},
	"fin":    {"IV", "IV", "FIN_WAIT", "FIN_WAIT", "LAST_ACK", "LAST_ACK", "LAST_ACK", "TIME_WAIT", "CLOSE", "IV"},
	"ack":    {"ESTABLISHED", "IV", "ESTABLISHED", "ESTABLISHED", "CLOSE_WAIT", "CLOSE_WAIT", "TIME_WAIT", "TIME_WAIT", "CLOSE", "IV"},
	"rst":    {"IV", "CLOSE", "CLOSE", "CLOSE", "CLOSE", "CLOSE", "CLOSE", "CLOSE", "CLOSE", "CLOSE"},
	"none":   {"IV", "IV", "IV", "IV", "IV", "IV", "IV", "IV", "IV", "IV"},
}

// tcpKind is get_conntrack_index: which row of tcpNext a packet's flags select.
func tcpKind(f uint8) string {
	switch {
	case f&tcpRST != 0:
		return "rst"
	case f&tcpSYN != 0 && f&tcpACK != 0:
		return "synack"
	case f&tcpSYN != 0:
		return "syn"
	case f&tcpFIN != 0:
		return "fin"
	case f&tcpACK != 0:
		return "ack"
	}
	return "none"
}

// conntrackDecides says whether conntrack lets the NAT rules decide the packet (it is the
// first of a new entry), follows an existing entry, or calls the packet invalid, from the
// kernel's TCP tracker: its flag check, its state table (tcpNext), a SYN's reopening of a
// closed entry and nf_conntrack_tcp_loose for an ACK without an entry (loose -1: not
// known). The tracker's sequence-window check is not modelled: a packet outside the
// window is invalid too.
func conntrackDecides(p Packet, found bool, e CTEntry, loose int) (Conntrack, string) {
	if p.Proto == lb.ProtoUDP {
		if found {
			return CTEntryFollowed, "the flow has a conntrack entry: the packet follows it"
		}
		return CTRules, "no conntrack entry: the packet starts one, and the rules decide"
	}
	f := tcpFlags(p.Flags) &^ tcpPSH
	if !tcpValid[f] {
		return CTInvalid, fmt.Sprintf("conntrack calls TCP flags %q invalid: no entry is made or followed, and the NAT rules are not read", p.Flags)
	}
	kind := tcpKind(f)
	if found {
		from := slices.Index(tcpStates, e.TCPState)
		if from < 0 {
			return CTEntryFollowed, "the flow has a conntrack entry: the packet follows it"
		}
		switch next := tcpNext[kind][from]; {
		case next == "IV":
			return CTInvalid, fmt.Sprintf("the flow's entry is %s, where conntrack calls this packet invalid: it follows no entry and the NAT rules are not read", e.TCPState)
		case kind == "syn" && (e.TCPState == "TIME_WAIT" || e.TCPState == "CLOSE"):
			return CTRules, fmt.Sprintf("the flow's entry is %s: a SYN usually reopens it (the old entry is deleted), and the rules decide", e.TCPState)
		case next == "IG":
			return CTEntryFollowed, fmt.Sprintf("the flow's entry is %s: conntrack ignores this packet's flags, and the packet follows the entry", e.TCPState)
		}
		return CTEntryFollowed, "the flow has a conntrack entry: the packet follows it"
	}
	switch {
	case kind == "syn":
		return CTRules, "no conntrack entry: the SYN starts one, and the rules decide"
	case kind == "ack":
		switch loose {
		case 0:
			return CTInvalid, "no conntrack entry, and net.netfilter.nf_conntrack_tcp_loose is 0: conntrack does not pick up an ACK mid-connection, the packet is invalid and the NAT rules are not read"
		case 1:
			return CTRules, "no conntrack entry: conntrack picks the ACK up as a connection already open (nf_conntrack_tcp_loose is 1), and the rules decide"
		}
		return CTRules, "no conntrack entry: conntrack picks the ACK up as a connection already open (with net.netfilter.nf_conntrack_tcp_loose 1, the default; with 0 it is invalid and untranslated), and the rules decide"
	}
	return CTInvalid, fmt.Sprintf("no conntrack entry, and a packet with flags %q opens none: conntrack calls it invalid, and the NAT rules are not read", p.Flags)
}
