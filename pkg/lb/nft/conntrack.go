package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb"
)

// ctnetlink's message type and attributes (include/uapi/linux/netfilter/nfnetlink_conntrack.h):
// only what one lookup by original tuple sends and reads.
const (
	ipctnlMsgCtNew = 0
	ipctnlMsgCtGet = 1

	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaStatus     = 3
	ctaProtoinfo  = 4
	ctaTimeout    = 7

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3

	ctaProtoinfoTCP      = 1
	ctaProtoinfoTCPState = 1

	ipsSrcNAT = 1 << 4
)

// tcpStates names nf_conntrack's TCP states (enum tcp_conntrack).
var tcpStates = []string{"NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"}

// CTEntry is the kernel's conntrack entry of a flow, found by its original tuple.
type CTEntry struct {
	// TCPState is the TCP state ("ESTABLISHED", "TIME_WAIT"...); empty for UDP.
	TCPState string
	// Status is the entry's status bits; DNAT and SNAT say whether it translates the
	// destination and the source.
	Status     uint32
	DNAT, SNAT bool
	// ReplySrc is where replies come from: the backend, for a DNATed flow. ReplyDst is
	// where they are sent: this node's masquerade address when SNATed.
	ReplySrc, ReplyDst netip.AddrPort
	// TimeoutSeconds is how long the entry lives without another packet.
	TimeoutSeconds uint32
}

// lookupCT asks the kernel's conntrack (in netns, if non-zero) for the entry of the flow
// with that original tuple; ok is false when there is none. It reads only.
func lookupCT(netns int, f Packet) (e CTEntry, ok bool, err error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return e, false, fmt.Errorf("open ctnetlink: %w", err)
	}
	defer c.Close()
	ae := netlink.NewAttributeEncoder()
	ae.Nested(ctaTupleOrig, func(t *netlink.AttributeEncoder) error {
		t.Nested(ctaTupleIP, func(ip *netlink.AttributeEncoder) error {
			if f.Src.Is4() {
				ip.Bytes(ctaIPv4Src, f.Src.AsSlice())
				ip.Bytes(ctaIPv4Dst, f.Dst.AsSlice())
			} else {
				ip.Bytes(ctaIPv6Src, f.Src.AsSlice())
				ip.Bytes(ctaIPv6Dst, f.Dst.AsSlice())
			}
			return nil
		})
		t.Nested(ctaTupleProto, func(p *netlink.AttributeEncoder) error {
			p.Uint8(ctaProtoNum, uint8(f.Proto))
			p.Bytes(ctaProtoSrcPort, binary.BigEndian.AppendUint16(nil, f.Sport))
			p.Bytes(ctaProtoDstPort, binary.BigEndian.AppendUint16(nil, f.Dport))
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return e, false, err
	}
	fam := byte(unix.NFPROTO_IPV4)
	if f.Src.Is6() {
		fam = unix.NFPROTO_IPV6
	}
	// The kernel flags its answer multi-part and ends it with no "done" message: asking
	// for an acknowledgement is what ends the answer.
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | ipctnlMsgCtGet), Flags: netlink.Request | netlink.Acknowledge},
		// struct nfgenmsg: family, version, resource id.
		Data: append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	msgs, err := c.Execute(req)
	if errors.Is(err, unix.ENOENT) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("look up conntrack entry: %w", err)
	}
	for _, m := range msgs {
		if m.Header.Type == netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8|ipctnlMsgCtNew) && len(m.Data) >= 4 {
			e, err = parseCT(m.Data[4:], f.Proto)
			return e, err == nil, err
		}
	}
	return e, false, fmt.Errorf("look up conntrack entry: no entry in %d answers", len(msgs))
}

func parseCT(b []byte, proto lb.Proto) (CTEntry, error) {
	var e CTEntry
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return e, err
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleReply:
			ad.Nested(func(t *netlink.AttributeDecoder) error {
				e.ReplySrc, e.ReplyDst = parseTuple(t)
				return nil
			})
		case ctaStatus:
			e.Status = ad.Uint32()
		case ctaTimeout:
			e.TimeoutSeconds = ad.Uint32()
		case ctaProtoinfo:
			ad.Nested(func(pi *netlink.AttributeDecoder) error {
				for pi.Next() {
					if pi.Type() == ctaProtoinfoTCP {
						pi.Nested(func(tcp *netlink.AttributeDecoder) error {
							for tcp.Next() {
								if tcp.Type() == ctaProtoinfoTCPState {
									if s := int(tcp.Uint8()); s < len(tcpStates) {
										e.TCPState = tcpStates[s]
									} else {
										e.TCPState = fmt.Sprint(s)
									}
								}
							}
							return nil
						})
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return e, fmt.Errorf("read conntrack entry: %w", err)
	}
	if proto != lb.ProtoTCP {
		e.TCPState = ""
	}
	e.DNAT, e.SNAT = e.Status&ipsDstNAT != 0, e.Status&ipsSrcNAT != 0
	return e, nil
}

func parseTuple(t *netlink.AttributeDecoder) (src, dst netip.AddrPort) {
	var sa, da netip.Addr
	var sp, dp uint16
	for t.Next() {
		switch t.Type() {
		case ctaTupleIP:
			t.Nested(func(ip *netlink.AttributeDecoder) error {
				for ip.Next() {
					a, _ := netip.AddrFromSlice(ip.Bytes())
					switch ip.Type() {
					case ctaIPv4Src, ctaIPv6Src:
						sa = a
					case ctaIPv4Dst, ctaIPv6Dst:
						da = a
					}
				}
				return nil
			})
		case ctaTupleProto:
			t.Nested(func(p *netlink.AttributeDecoder) error {
				for p.Next() {
					switch p.Type() {
					case ctaProtoSrcPort:
						sp = p.Uint16()
					case ctaProtoDstPort:
						dp = p.Uint16()
					}
				}
				return nil
			})
		}
	}
	return netip.AddrPortFrom(sa, sp), netip.AddrPortFrom(da, dp)
}
