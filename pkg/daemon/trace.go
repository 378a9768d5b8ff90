package daemon

import (
	"fmt"
	"net"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/l4lb/l4lb/internal/limits"
	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// TraceView is `l4lb trace`: what the loaded XDP program does with one crafted packet,
// stage by stage, from the live maps; on an nftables node, what its rules read back from
// the kernel and the kernel's conntrack do with it (tracenat.go). Nothing is written: no
// conntrack entry, no counter.
type TraceView struct {
	Packet string `json:"packet"` // the packet traced, in one line
	// Verdict: tx, drop or pass (XDP); dnat, drop or pass (nftables: pass leaves the
	// packet as addressed, to the kernel's routing).
	Verdict string `json:"verdict"`
	// Reason: the counter a real packet would count in (XDP); new_flow,
	// conntrack_entry, conntrack_invalid, drop_no_backend or not_vip (nftables).
	Reason  string `json:"reason"`
	Summary string `json:"summary"` // the answer in one sentence
	// Prefilter: the deny list's and the VIP's allow list's verdict.
	Prefilter string `json:"prefilter"`
	// VIP matched (its name and key), or why none.
	VIP    string `json:"vip,omitempty"`
	VIPKey string `json:"vip_key,omitempty"`
	NoVIP  string `json:"no_vip,omitempty"`
	// Conntrack: what the lookup found and whether the packet followed it.
	Conntrack string `json:"conntrack,omitempty"`
	// Ring: the slot the flow's hash picked and its backend (when the ring was consulted).
	Hash    uint32 `json:"hash,omitempty"`
	Ring    string `json:"ring,omitempty"`
	Guard   string `json:"guard,omitempty"`
	Backend string `json:"backend,omitempty"`
	// Encap: the outer header of the frame as it leaves (tx), or the ICMP answer.
	Encap string `json:"encap,omitempty"`
	MTU   string `json:"mtu,omitempty"`
	// Writes: what a real packet would write (the trace did not).
	Writes string `json:"writes,omitempty"`
	// Rule: the nftables rules that decide (chain, comment, handle); Warning: what makes
	// the answer doubtful (rules of l4lb's that someone changed).
	Rule    string `json:"rule,omitempty"`
	Warning string `json:"warning,omitempty"`
}

// traceMACs are the Ethernet addresses of a traced frame (the program reads neither).
var traceSrcMAC, traceDstMAC = net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}

// traceFrame builds the frame for q: Ethernet, IPv4 (DF set) or IPv6, TCP with flags or
// UDP, padded with payload to size bytes of IP packet when size is larger.
func traceFrame(q admin.TraceQuery) ([]byte, error) {
	v4 := q.Src.Addr().Is4()
	var ip gopacket.NetworkLayer
	var l []gopacket.SerializableLayer
	eth := &layers.Ethernet{SrcMAC: traceSrcMAC, DstMAC: traceDstMAC, EthernetType: layers.EthernetTypeIPv4}
	hdr := 20
	if v4 {
		p := &layers.IPv4{Version: 4, TTL: 64, Flags: layers.IPv4DontFragment, SrcIP: q.Src.Addr().AsSlice(), DstIP: q.Dst.Addr().AsSlice()}
		ip = p
		l = append(l, eth, p)
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		p := &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: q.Src.Addr().AsSlice(), DstIP: q.Dst.Addr().AsSlice()}
		ip = p
		l = append(l, eth, p)
		hdr = 40
	}
	switch q.Proto {
	case lb.ProtoTCP:
		t := &layers.TCP{SrcPort: layers.TCPPort(q.Src.Port()), DstPort: layers.TCPPort(q.Dst.Port()), Window: 64240, Seq: 1}
		for _, c := range q.Flags {
			switch c {
			case 'S':
				t.SYN = true
			case 'A':
				t.ACK = true
			case 'F':
				t.FIN = true
			case 'R':
				t.RST = true
			case 'P':
				t.PSH = true
			case 'U':
				t.URG = true
			}
		}
		if err := t.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, err
		}
		l = append(l, t)
		hdr += 20
		if v4 {
			l[1].(*layers.IPv4).Protocol = layers.IPProtocolTCP
		} else {
			l[1].(*layers.IPv6).NextHeader = layers.IPProtocolTCP
		}
	default:
		u := &layers.UDP{SrcPort: layers.UDPPort(q.Src.Port()), DstPort: layers.UDPPort(q.Dst.Port())}
		if err := u.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, err
		}
		l = append(l, u)
		hdr += 8
		if v4 {
			l[1].(*layers.IPv4).Protocol = layers.IPProtocolUDP
		} else {
			l[1].(*layers.IPv6).NextHeader = layers.IPProtocolUDP
		}
	}
	if q.Size > hdr {
		l = append(l, gopacket.Payload(make([]byte, q.Size-hdr)))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, l...); err != nil {
		return nil, fmt.Errorf("build the packet: %w", err)
	}
	return buf.Bytes(), nil
}

// Trace runs q's packet through the loaded XDP program's trace instance, or through an
// nftables node's rules.
func (d *Daemon) Trace(q admin.TraceQuery) (any, error) {
	if t, ok := d.dp.(natTracer); ok {
		return d.traceNAT(t, q)
	}
	n, ok := d.dp.(*xdp.Node)
	if !ok {
		return nil, noTrace(d.dp.Info().Mode)
	}
	x := n.Dataplane()
	frame, err := traceFrame(q)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", admin.ErrBadRequest, err)
	}
	tr, err := x.Trace(frame)
	if err != nil {
		return nil, err
	}
	return d.traceView(x, q, tr), nil
}

var verdicts = map[uint32]string{1: "drop", 2: "pass", 3: "tx"}

func (d *Daemon) traceView(x *xdp.Dataplane, q admin.TraceQuery, tr xdp.Trace) TraceView {
	v := TraceView{Packet: q.String(), Verdict: verdicts[tr.Action], Reason: tr.Reason}
	if v.Verdict == "" {
		v.Verdict = fmt.Sprint(tr.Action)
	}
	backend := func(id uint32) string {
		if a := x.BackendOf(id); a.IsValid() {
			return fmt.Sprintf("%s (id %d)", a, id)
		}
		return fmt.Sprintf("id %d", id)
	}
	switch {
	case tr.Reason == "drop_deny":
		v.Prefilter = "denied: the source is in the deny list"
	case tr.Reason == "drop_not_allowed":
		v.Prefilter = "denied: the source is not in the VIP's allow list"
	case tr.AllowChecked:
		v.Prefilter = "passed (the source is in the VIP's allow list)"
	default:
		v.Prefilter = "passed"
	}
	if tr.HasVIP {
		if k, ok := x.VIPOf(tr.VIPID); ok {
			v.VIPKey = k.String()
			v.VIP = d.vipNames()[k]
		}
	} else if tr.Reason != "drop_deny" {
		v.NoVIP = noVIPReason(tr.Reason)
	}
	if tr.HasVIP {
		switch {
		case tr.SYN:
			v.Conntrack = "not looked up: a SYN always goes to the ring (its entry replaces any stale one)"
		case tr.CtFound && tr.CtFollowed:
			v.Conntrack = fmt.Sprintf("entry found, followed to backend %s", backend(uint32(tr.CtState&limits.CTBackendMask)))
		case tr.CtFound:
			v.Conntrack = fmt.Sprintf("entry found naming backend %s, not followed: %s; re-hashed", backend(uint32(tr.CtState&limits.CTBackendMask)), tr.MovedReason)
		default:
			v.Conntrack = "no entry"
		}
		v.Hash = tr.Hash
	}
	if tr.Ring {
		if tr.Slot == ^uint32(0) {
			v.Ring = "the VIP has no ring"
		} else if tr.BackendID != 0 {
			v.Ring = fmt.Sprintf("slot %d -> backend %s", tr.Slot, backend(tr.BackendID))
		} else {
			v.Ring = fmt.Sprintf("slot %d names no live backend", tr.Slot)
		}
	}
	if tr.BackendID != 0 {
		v.Backend = backend(tr.BackendID)
	}
	v.Guard = tr.Guard
	switch tr.Reason {
	case "drop_too_big", "drop_too_big_rate":
		v.MTU = "too big once encapsulated: dropped"
	case "tx_icmp_too_big":
		v.MTU = "too big once encapsulated: answered with an ICMP too-big"
	default:
		if v.Verdict == "tx" {
			v.MTU = "fits"
		}
	}
	if v.Verdict == "tx" {
		v.Encap = outerOf(tr.Out)
	}
	switch {
	case tr.WriteNew:
		v.Writes = "a new conntrack entry"
	case tr.WriteUpdate:
		v.Writes = "the found entry, rewritten"
	}
	v.Summary = traceSummary(v)
	return v
}

// noVIPReason says why a packet matched no VIP, from the counter it counts in.
func noVIPReason(reason string) string {
	switch reason {
	case "pass_non_vip":
		return "no VIP on this address and port (passed to the kernel)"
	case "pass_other_proto":
		return "the address has a VIP, but not for this protocol (passed to the kernel)"
	case "pass_non_ip", "pass_qinq":
		return "not an IP packet the program parses (passed)"
	}
	if strings.HasPrefix(reason, "drop_") {
		return "the packet was dropped before its VIP was looked up (" + reason + ")"
	}
	return ""
}

// outerOf describes the outer header of an encapsulated frame (or the ICMP answer).
func outerOf(frame []byte) string {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	mac := ""
	if eth != nil {
		mac = fmt.Sprintf(" (next hop %s)", eth.DstMAC)
	}
	if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		kind := map[layers.IPProtocol]string{layers.IPProtocolIPv4: "ipip", layers.IPProtocolIPv6: "6in4", layers.IPProtocolICMPv4: "icmp answer"}[ip.Protocol]
		return fmt.Sprintf("%s %s -> %s%s", kind, ip.SrcIP, ip.DstIP, mac)
	}
	if ip, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		kind := map[layers.IPProtocol]string{layers.IPProtocolIPv4: "4in6", layers.IPProtocolIPv6: "ip6ip6", layers.IPProtocolICMPv6: "icmpv6 answer"}[ip.NextHeader]
		return fmt.Sprintf("%s %s -> %s%s", kind, ip.SrcIP, ip.DstIP, mac)
	}
	return ""
}

func traceSummary(v TraceView) string {
	vip := v.VIP
	if vip == "" {
		vip = v.VIPKey
	}
	switch {
	case v.Verdict == "tx" && v.Backend != "" && v.Reason != "tx_icmp_too_big":
		return fmt.Sprintf("forwarded to %s for VIP %s, %s", v.Backend, vip, v.Encap)
	case v.Verdict == "tx":
		return "answered with an ICMP too-big: " + v.Encap
	case v.Verdict == "pass":
		return "passed to the kernel: " + v.NoVIP
	}
	return "dropped (" + v.Reason + ")"
}
