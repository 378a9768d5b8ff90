package daemon

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/nft"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// The NAT data planes' side of `l4lb trace`. nftables answers from its own rules, read
// back from the kernel (pkg/lb/nft Trace), in the XDP trace's shape: verdict dnat, drop
// or pass. iptables and IPVS pick backends where l4lb cannot replay the choice, and say
// where to look instead.

// Reasons of an nftables trace (an XDP trace's reason is a counter's name).
const (
	// reasonNewFlow: the VIP's rule DNATs the packet, the first of a new conntrack
	// entry (counted in the VIP's and the backend's new flows).
	reasonNewFlow = "new_flow"
	// reasonEntry: the packet follows the flow's conntrack entry; the rules are not read.
	reasonEntry = "conntrack_entry"
	// reasonInvalid: conntrack calls the packet invalid; the NAT rules are not read.
	reasonInvalid = "conntrack_invalid"
	// reasonNotVIP: no rule of l4lb's matches.
	reasonNotVIP = "not_vip"
)

// natTracer is a data plane that traces a packet through its own rules (nftables).
type natTracer interface {
	Trace(nft.Packet) (nft.Trace, error)
}

var _ natTracer = (*nft.Dataplane)(nil)

// traceNAT traces q through t's rules.
func (d *Daemon) traceNAT(t natTracer, q admin.TraceQuery) (any, error) {
	tr, err := t.Trace(nft.Packet{Flow: xdp.Flow{Src: q.Src.Addr(), Dst: q.Dst.Addr(), Sport: q.Src.Port(), Dport: q.Dst.Port(), Proto: q.Proto}, Flags: q.Flags})
	if errors.Is(err, nft.ErrPacket) {
		return nil, fmt.Errorf("%w: %w", admin.ErrBadRequest, err)
	}
	if err != nil {
		return nil, err
	}
	return nftTraceView(q, tr, d.vipNames()), nil
}

// noTrace is the answer of a data plane without a trace: what to look at instead.
func noTrace(mode string) error {
	var why string
	switch mode {
	case "iptables":
		why = "its backend is drawn at random per new flow (statistic mode, kube-proxy's way; a hash_no_source_port VIP's client then keeps what its first flow drew), so no trace can say which one; see the VIP's chain with `iptables -t nat -L L4LB-PREROUTING -n` (ip6tables for IPv6), its backends with `iptables -t nat -L L4LB-V<id> -n -v`, and established flows with `conntrack -L`"
	case "ipvs":
		why = "IPVS's mh scheduler picks the backend inside the kernel, with no lookup l4lb can ask; see the virtual service and its real servers with `ipvsadm -L -n`, and connections with `ipvsadm -L -n -c`"
	default:
		why = fmt.Sprintf("trace runs the XDP program or reads nftables rules; this node forwards with %s (see `l4lb status`)", mode)
	}
	return fmt.Errorf("%w for dataplane %s: %s", admin.ErrUnavailable, mode, why)
}

// nftTraceView renders an nftables trace: names are the configured VIPs' names.
func nftTraceView(q admin.TraceQuery, tr nft.Trace, names map[lb.VIPKey]string) TraceView {
	v := TraceView{Packet: q.String(), Prefilter: "none: the nftables data plane has no prefilter"}
	vip := ""
	if tr.Matched {
		v.VIPKey = tr.VIP.String()
		v.VIP = names[tr.VIP]
		vip = cmp.Or(v.VIP, v.VIPKey)
	} else {
		v.NoVIP = "no VIP on this address and port"
		if len(tr.Others) > 0 {
			ks := make([]string, len(tr.Others))
			for i, k := range tr.Others {
				ks[i] = k.String()
			}
			v.NoVIP = fmt.Sprintf("the address has VIPs (%s), none for this protocol and port", strings.Join(ks, ", "))
		}
		v.NoVIP += ": l4lb's rules leave the packet alone (the kernel routes or delivers it as addressed)"
	}
	ringBackend := ""
	if tr.Backend.IsValid() {
		ringBackend = tr.Backend.String()
		if tr.BackendID != 0 {
			ringBackend = fmt.Sprintf("%s (id %d)", tr.Backend, tr.BackendID)
		}
	}
	if tr.RingSize != 0 {
		v.Hash = tr.Hash
		v.Ring = fmt.Sprintf("slot %d of %d (%s)", tr.Slot, tr.RingSize, tr.Ring)
		if ringBackend != "" {
			v.Ring += " -> backend " + ringBackend
		} else {
			v.Ring += ": names no backend"
		}
	}
	if len(tr.Altered) > 0 {
		v.Warning = "rules differ from what l4lb writes (changed by someone else?), so the slot is not vouched for: " + strings.Join(tr.Altered, "; ")
	}

	// Conntrack: the entry, then why the rules decide or not.
	switch {
	case tr.CTErr != "":
		v.Conntrack = fmt.Sprintf("not looked up (%s): an entry of the flow would take precedence over the rules; without one, %s", tr.CTErr, tr.CTWhy)
	case tr.EntryFound:
		v.Conntrack = describeEntry(tr.Entry) + "; " + tr.CTWhy
	default:
		v.Conntrack = tr.CTWhy
	}

	port := q.Dst.Port()
	switch {
	case tr.Conntrack == nft.CTEntryFollowed:
		v.Reason = reasonEntry
		e := tr.Entry
		if !e.DNAT {
			v.Verdict = "pass"
			v.Encap = "none: the entry translates no destination"
			v.Summary = "follows its conntrack entry, which does not translate the destination: the packet goes on as addressed"
			break
		}
		v.Verdict = "dnat"
		v.Backend = e.ReplySrc.Addr().String()
		if e.ReplySrc.Addr() == tr.Backend && ringBackend != "" {
			v.Backend = ringBackend
		}
		v.Encap = fmt.Sprintf("none: as the entry translates: destination to %s", e.ReplySrc)
		if e.SNAT {
			v.Encap += fmt.Sprintf(", source to %s", e.ReplyDst)
		}
		v.Summary = fmt.Sprintf("follows its conntrack entry: DNAT to %s", v.Backend)
		if vip != "" {
			v.Summary += " for VIP " + vip
		}
		if tr.Backend.IsValid() && e.ReplySrc.Addr() != tr.Backend {
			v.Summary += fmt.Sprintf(" (a new flow would get %s)", ringBackend)
		}
	case tr.Conntrack == nft.CTInvalid:
		v.Verdict, v.Reason = "pass", reasonInvalid
		v.Summary = "not translated: conntrack calls the packet invalid, so the NAT rules are not read and it goes on as addressed"
	case tr.Verdict == nft.VerdictDNAT:
		v.Verdict, v.Reason = "dnat", reasonNewFlow
		v.Backend = ringBackend
		v.Encap = fmt.Sprintf("none: DNAT to %s (the VIP's port kept)", netip.AddrPortFrom(tr.Backend, port))
		if tr.Masquerade != "" {
			v.Encap += ", then SNAT (masquerade) to this node's address on the route to the backend"
		} else {
			v.Encap += "; no masquerade rule for the backend: it sees the client's address, and its replies must route back through this node"
		}
		v.Writes = "a kernel conntrack entry holding the flow's NAT"
		v.Summary = fmt.Sprintf("DNAT to %s for VIP %s (ring slot %d)", ringBackend, vip, tr.Slot)
		if tr.Masquerade != "" {
			v.Summary += ", masqueraded to this node's address"
		}
	case tr.Verdict == nft.VerdictDrop:
		v.Verdict, v.Reason = "drop", nft.CounterNoBackend
		v.Summary = fmt.Sprintf("dropped: the flow's slot of VIP %s names no backend (every backend drained or down)", vip)
	default:
		v.Verdict, v.Reason = "pass", reasonNotVIP
		v.Writes = "a kernel conntrack entry without NAT (unless something else drops the packet)"
		v.Summary = "passed: " + v.NoVIP
		if tr.Matched {
			v.Summary = "passed: no rule of l4lb's took the packet"
		}
	}
	if tr.Conntrack == nft.CTEntryFollowed {
		v.Writes = "nothing new: the entry's state and timeout are refreshed"
	}
	if q.Size > 0 {
		v.MTU = "not checked: NAT adds no header (the route's MTU applies, as to any forwarded packet)"
	}
	// The rules that decide, when conntrack lets them.
	if tr.Conntrack == nft.CTRules {
		v.Rule = tr.Rule
		if tr.Verdict == nft.VerdictDNAT && tr.Masquerade != "" {
			v.Rule += "; " + tr.Masquerade
		}
	}
	return v
}

// describeEntry says what a kernel conntrack entry holds.
func describeEntry(e nft.CTEntry) string {
	s := "entry"
	if e.TCPState != "" {
		s += " " + e.TCPState
	}
	switch {
	case e.DNAT && e.SNAT:
		s += fmt.Sprintf(", DNAT to %s, SNAT to %s", e.ReplySrc, e.ReplyDst)
	case e.DNAT:
		s += fmt.Sprintf(", DNAT to %s", e.ReplySrc)
	default:
		s += ", no NAT"
	}
	return s + fmt.Sprintf(", expires in %d s", e.TimeoutSeconds)
}
