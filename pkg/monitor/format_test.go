package monitor

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var at = time.Date(2025, 6, 1, 15, 4, 5, 123456789, time.UTC)

func TestLine(t *testing.T) {
	cases := []struct {
		name string
		ev   Event
		want string
	}{
		{"drop", Event{
			Time: at, Type: Drop, Reason: "drop_deny", Proto: "tcp", VIP: "web", Len: 74,
			Src: netip.MustParseAddrPort("198.51.100.7:40000"), Dst: netip.MustParseAddrPort("203.0.113.10:80"),
		}, "15:04:05.123456 drop drop_deny tcp 198.51.100.7:40000 -> 203.0.113.10:80 vip=web backend=- len=74"},
		{"drop without flags, no vip", Event{
			Time: at, Type: Drop, Reason: "drop_deny", Proto: "udp", Len: 60,
			Src: netip.MustParseAddrPort("198.51.100.7:40000"), Dst: netip.MustParseAddrPort("203.0.113.10:53"),
		}, "15:04:05.123456 drop drop_deny udp 198.51.100.7:40000 -> 203.0.113.10:53 vip=- backend=- len=60"},
		{"moved flow, v6", Event{
			Time: at, Type: Flow, Reason: ReasonMoved, Proto: "tcp", TCPFlags: 0x18, VIP: "web6", Len: 86,
			Src: netip.MustParseAddrPort("[2001:db8::7]:40000"), Dst: netip.MustParseAddrPort("[2001:db8::10]:443"),
			Backend: netip.MustParseAddr("2001:db8::12"), PrevBackend: netip.MustParseAddr("2001:db8::11"),
		}, "15:04:05.123456 flow moved tcp [2001:db8::7]:40000 -> [2001:db8::10]:443 vip=web6 backend=2001:db8::12 prev=2001:db8::11 flags=P. len=86"},
		{"new flow", Event{
			Time: at, Type: Flow, Reason: ReasonNewFlow, Proto: "udp", VIP: "dns", Len: 70,
			Src: netip.MustParseAddrPort("198.51.100.7:5353"), Dst: netip.MustParseAddrPort("203.0.113.10:53"),
			Backend: netip.MustParseAddr("198.51.100.11"),
		}, "15:04:05.123456 flow new_flow udp 198.51.100.7:5353 -> 203.0.113.10:53 vip=dns backend=198.51.100.11 prev=- len=70"},
		{"icmp has no ports", Event{
			Time: at, Type: Drop, Reason: "drop_icmp_bad", Proto: "icmp", Len: 98,
			Src: netip.MustParseAddrPort("198.51.100.7:0"), Dst: netip.MustParseAddrPort("203.0.113.99:0"),
		}, "15:04:05.123456 drop drop_icmp_bad icmp 198.51.100.7 -> 203.0.113.99 vip=- backend=- len=98"},
		{"socket lb: the program in place of a source", Event{
			Time: at, Source: "socket", Type: Drop, Reason: ReasonSockNoBackend, Proto: "tcp", VIP: "api",
			Dst: netip.MustParseAddrPort("203.0.113.11:80"), Process: "curl[4711]",
		}, "15:04:05.123456 drop sock_no_backend tcp curl[4711] -> 203.0.113.11:80 vip=api backend=- len=0"},
		{"socket lb connect", Event{
			Time: at, Source: "socket", Type: Flow, Reason: ReasonSockConnect, Proto: "udp", VIP: "dns",
			Dst: netip.MustParseAddrPort("[2001:db8::10]:53"), Backend: netip.MustParseAddr("2001:db8::11"), Process: "dig[12]",
		}, "15:04:05.123456 flow sock_connect udp dig[12] -> [2001:db8::10]:53 vip=dns backend=2001:db8::11 prev=- len=0"},
		{"nothing known", Event{Time: at}, "15:04:05.123456 - - - - -> - vip=- backend=- len=0"},
	}
	for _, tc := range cases {
		if got := Line(tc.ev); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}
}

func TestTCPFlagString(t *testing.T) {
	for f, want := range map[uint8]string{0x02: "S", 0x12: "S.", 0x10: ".", 0x11: "F.", 0x04: "R", 0x14: "R.", 0x29: "FPU", 0xc2: "SEW"} {
		if got := TCPFlagString(f); got != want {
			t.Errorf("%#x: %q, want %q", f, got, want)
		}
	}
}

// TestWriteJSON: one object a line, that decodes back to the event.
func TestWriteJSON(t *testing.T) {
	ev := flow(1)
	ev.PrevBackend = netip.MustParseAddr("198.51.100.12")
	ev.Data = []byte{0xde, 0xad, 0xbe, 0xef}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, ev); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(&buf, drop("drop_deny", "", 2)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], `"data":"3q2+7w=="`) || strings.Contains(lines[1], `"data"`) || strings.Contains(lines[1], `"backend"`) {
		t.Errorf("lines:\n%s", buf.String())
	}
	var got Event
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ev, got, addrs); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}
