package monitor

import (
	"encoding/json"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// TimeLayout is the time of day a line starts with, as tcpdump prints it.
const TimeLayout = "15:04:05.000000"

// Line is the event in one line, fields in a fixed order, for an operator's terminal:
//
//	15:04:05.000000 drop drop_deny tcp 198.51.100.7:40000 -> 203.0.113.10:80 vip=web backend=- len=74
//	15:04:05.000123 flow moved tcp [2001:db8::7]:40000 -> [2001:db8::10]:80 vip=web6 backend=2001:db8::12 prev=2001:db8::11 flags=. len=86
//	15:04:05.000456 drop sock_no_backend tcp curl[4711] -> 203.0.113.11:80 vip=api backend=- len=0
//
// A socket LB event names the local program (comm[pid]) where a packet names its source.
// The time is in the location e.Time carries. A TCP event with flags names them as
// tcpdump does (S SYN, F FIN, R RST, P PSH, . ACK, U URG, E ECE, W CWR); an unknown field
// is "-".
func Line(e Event) string {
	var b strings.Builder
	b.WriteString(e.Time.Format(TimeLayout))
	b.WriteByte(' ')
	b.WriteString(dash(string(e.Type)))
	b.WriteByte(' ')
	b.WriteString(dash(e.Reason))
	b.WriteByte(' ')
	b.WriteString(dash(e.Proto))
	b.WriteByte(' ')
	if !e.Src.IsValid() && e.Process != "" {
		b.WriteString(e.Process)
	} else {
		b.WriteString(endpoint(e.Src, e.Proto))
	}
	b.WriteString(" -> ")
	b.WriteString(endpoint(e.Dst, e.Proto))
	b.WriteString(" vip=")
	b.WriteString(dash(e.VIP))
	b.WriteString(" backend=")
	b.WriteString(addr(e.Backend))
	if e.Type == Flow {
		b.WriteString(" prev=")
		b.WriteString(addr(e.PrevBackend))
	}
	if e.Proto == "tcp" && e.TCPFlags != 0 {
		b.WriteString(" flags=")
		b.WriteString(TCPFlagString(e.TCPFlags))
	}
	b.WriteString(" len=")
	b.WriteString(strconv.Itoa(e.Len))
	return b.String()
}

// WriteLine writes Line(e) and a newline.
func WriteLine(w io.Writer, e Event) error {
	_, err := io.WriteString(w, Line(e)+"\n")
	return err
}

// WriteJSON writes the event as one JSON object on one line (Data in base64), the form
// the admin API streams.
func WriteJSON(w io.Writer, e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// TCPFlagString names TCP flags in tcpdump's letters and order: "S", "S.", "P.", "R".
func TCPFlagString(f uint8) string {
	var b strings.Builder
	for _, x := range []struct {
		bit  uint8
		name byte
	}{{0x01, 'F'}, {0x02, 'S'}, {0x04, 'R'}, {0x08, 'P'}, {0x20, 'U'}, {0x40, 'E'}, {0x80, 'W'}, {0x10, '.'}} {
		if f&x.bit != 0 {
			b.WriteByte(x.name)
		}
	}
	return b.String()
}

// endpoint is addr:port ([v6]:port), or the address alone for a protocol without ports.
func endpoint(ap netip.AddrPort, proto string) string {
	if !ap.Addr().IsValid() {
		return "-"
	}
	if ap.Port() == 0 && proto != "tcp" && proto != "udp" {
		return ap.Addr().String()
	}
	return ap.String()
}

func addr(a netip.Addr) string {
	if !a.IsValid() {
		return "-"
	}
	return a.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
