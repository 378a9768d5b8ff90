package monitor

import (
	"bytes"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// frame builds an Ethernet/IPv4/TCP SYN from src to dst.
func frame(t *testing.T, src, dst netip.AddrPort) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), SYN: true, Window: 64240}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPcap: what the writer writes, pcapgo's reader reads back: the frames, their
// lengths and times, and a comment on each saying what the data plane did.
func TestPcap(t *testing.T) {
	src, dst := netip.MustParseAddrPort("198.51.100.7:40000"), netip.MustParseAddrPort("203.0.113.10:80")
	d := drop("drop_deny", "web", 1)
	d.Proto = "tcp"
	d.Data = frame(t, src, dst)
	d.Len = len(d.Data)
	f := flow(2)
	f.Reason = ReasonMoved
	f.PrevBackend = netip.MustParseAddr("198.51.100.12")
	f.Data = frame(t, src, dst)[:20] // a truncated copy of a longer frame
	f.Len = 1514
	empty := drop("drop_malformed", "", 3) // no bytes at all
	evs := []Event{d, f, empty}

	var buf bytes.Buffer
	w, err := NewPcapWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}

	r, err := pcapgo.NewNgReader(&buf, pcapgo.DefaultNgReaderOptions)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("link type %v, want Ethernet", r.LinkType())
	}
	wantComments := []string{
		"l4lb drop drop_deny vip=web backend=- source=xdp cpu=0",
		"l4lb flow moved vip=web backend=198.51.100.11 prev=198.51.100.12 source=xdp cpu=0",
		"l4lb drop drop_malformed vip=- backend=- source=xdp cpu=0",
	}
	for i, e := range evs {
		data, ci, opts, err := r.ReadPacketDataWithOptions()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if !bytes.Equal(data, e.Data) {
			t.Errorf("packet %d: frame %x, want %x", i, data, e.Data)
		}
		if ci.CaptureLength != len(e.Data) || ci.Length != e.Len || !ci.Timestamp.Equal(e.Time) {
			t.Errorf("packet %d: capture length %d, length %d, time %v; want %d, %d, %v", i, ci.CaptureLength, ci.Length, ci.Timestamp, len(e.Data), e.Len, e.Time)
		}
		if len(opts.Comments) != 1 || opts.Comments[0] != wantComments[i] {
			t.Errorf("packet %d: comments %q, want %q", i, opts.Comments, wantComments[i])
		}
	}
	if _, _, err := r.ReadPacketData(); err != io.EOF {
		t.Errorf("after the last packet: %v, want EOF", err)
	}

	// The frame decodes as what it is.
	pkt := gopacket.NewPacket(d.Data, layers.LayerTypeEthernet, gopacket.Default)
	if tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); tcp == nil || !tcp.SYN || tcp.DstPort != 80 {
		t.Errorf("frame does not decode as the SYN: %v", pkt)
	}
	if !strings.HasPrefix(Comment(f), "l4lb flow moved") {
		t.Errorf("Comment %q", Comment(f))
	}
}
