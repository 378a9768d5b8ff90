package monitor

import (
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// PcapWriter writes events as a pcapng file Wireshark and tcpdump read: one Ethernet
// frame per event (the bytes the data plane kept, the frame's length on the wire), with a
// comment saying what the data plane did (see Comment). Call Flush before closing the
// file.
type PcapWriter struct {
	w *pcapgo.NgWriter
}

// NewPcapWriter writes the file's header to w.
func NewPcapWriter(w io.Writer) (*PcapWriter, error) {
	ng, err := pcapgo.NewNgWriterInterface(w, pcapgo.NgInterface{
		Name:        "l4lb",
		Description: "l4lb monitor: the first bytes of each frame, as the data plane saw it when it decided",
		OS:          runtime.GOOS,
		LinkType:    layers.LinkTypeEthernet,
	}, pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{
		OS:          runtime.GOOS,
		Application: "l4lb monitor",
	}})
	if err != nil {
		return nil, fmt.Errorf("write pcapng header: %w", err)
	}
	return &PcapWriter{w: ng}, nil
}

// Write adds the event's frame. An event without Data is written as an empty frame with
// its comment, so the file still counts it.
func (p *PcapWriter) Write(e Event) error {
	ci := gopacket.CaptureInfo{
		Timestamp:     e.Time,
		CaptureLength: len(e.Data),
		Length:        max(e.Len, len(e.Data)),
	}
	opts := pcapgo.NgPacketOptions{Comments: []string{Comment(e)}}
	if e.Source == "xdp" { // XDP sees frames as they arrive
		opts.Flags = &pcapgo.NgEpbFlags{Direction: pcapgo.NgEpbFlagDirectionInbound}
	}
	if err := p.w.WritePacketWithOptions(ci, e.Data, opts); err != nil {
		return fmt.Errorf("write pcapng packet: %w", err)
	}
	return nil
}

// Flush writes out what is buffered.
func (p *PcapWriter) Flush() error { return p.w.Flush() }

// Comment is what a packet's pcapng comment says: "l4lb drop drop_deny vip=web
// backend=-", with prev= for a flow event, the program and destination of a socket LB
// event (which has no frame), and the source and CPU.
func Comment(e Event) string {
	parts := []string{"l4lb", dash(string(e.Type)), dash(e.Reason), "vip=" + dash(e.VIP), "backend=" + addr(e.Backend)}
	if e.Type == Flow {
		parts = append(parts, "prev="+addr(e.PrevBackend))
	}
	if e.Process != "" {
		parts = append(parts, "process="+e.Process, "dst="+e.Dst.String())
	}
	parts = append(parts, "source="+dash(e.Source), fmt.Sprintf("cpu=%d", e.CPU))
	return strings.Join(parts, " ")
}
