package daemon

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/lb"
	"github.com/l4lb/l4lb/pkg/lb/nft"
)

// TestPrivilegedNFTTraceView: Daemon.Trace on a real nftables data plane in a namespace
// names the backend each real flow then reaches, and the flow's next packet follows the
// entry it left to the same backend; a VIP without a backend is a drop.
func TestPrivilegedNFTTraceView(t *testing.T) {
	testutil.RequireCommands(t, "nft")
	b := testutil.NewNATBed(t)
	h, err := netns.GetFromName(b.LB.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	dp, err := nft.New(nft.Options{RingSize: 4099, NetNS: int(h), Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{dp: dp}
	d.ctrl = lb.NewController(slog.New(slog.DiscardHandler), dp, nft.MaxBackendID, nil, nil)
	k4 := lb.VIPKey{Addr: netip.MustParseAddr("198.51.100.10"), Port: 80, Proto: lb.ProtoTCP}
	k6 := lb.VIPKey{Addr: netip.MustParseAddr("2001:db8:f::10"), Port: 53, Proto: lb.ProtoUDP}
	empty := lb.VIPKey{Addr: netip.MustParseAddr("198.51.100.10"), Port: 8080, Proto: lb.ProtoTCP}
	for _, v := range []lb.VIP{b.VIP(k4, 0), b.VIP(k6, 0), b.VIP(empty, 0, 0, 0)} {
		if err := dp.SetVIP(v); err != nil {
			t.Fatal(err)
		}
	}
	trace := func(t *testing.T, proto, src, dst, flags string) TraceView {
		t.Helper()
		if proto == "udp" {
			flags = ""
		}
		q, err := admin.ParseTrace(proto, src, dst, flags, "")
		if err != nil {
			t.Fatal(err)
		}
		out, err := d.Trace(q)
		if err != nil {
			t.Fatal(err)
		}
		return out.(TraceView)
	}
	for _, k := range []lb.VIPKey{k4, k6} {
		src := netip.MustParseAddr("192.0.2.1")
		if k.Addr.Is6() {
			src = netip.MustParseAddr("2001:db8:c::1")
		}
		dst := netip.AddrPortFrom(k.Addr, k.Port).String()
		seen := map[string]bool{}
		for i := range 16 {
			sport := uint16(41000 + 17*i)
			from := netip.AddrPortFrom(src, sport).String()
			v := trace(t, k.Proto.String(), from, dst, "S")
			if v.Verdict != "dnat" || v.Reason != "new_flow" || v.VIPKey != k.String() || v.Warning != "" || !strings.HasPrefix(v.Ring, "slot ") {
				t.Fatalf("trace of a new flow: %+v", v)
			}
			got, err := b.Ask(k, sport)
			if err != nil {
				t.Fatal(err)
			}
			name := b.CheckAnswer(t, got)
			be, _, _ := strings.Cut(v.Backend, " ")
			if want := b.Name(netip.MustParseAddr(be)); name != want {
				t.Errorf("flow from %s reached %s, the trace said %s (%s)", from, name, v.Backend, want)
			}
			seen[name] = true
			next := trace(t, k.Proto.String(), from, dst, "A")
			if next.Verdict != "dnat" || next.Reason != "conntrack_entry" || !strings.HasPrefix(next.Backend, be) || !strings.HasPrefix(next.Conntrack, "entry") {
				t.Errorf("trace of the flow's next packet: %+v", next)
			}
		}
		if len(seen) != 2 {
			t.Errorf("%s: 16 flows reached %v, want both backends", k, seen)
		}
	}
	v := trace(t, "tcp", "192.0.2.1:42000", "198.51.100.10:8080", "S")
	if v.Verdict != "drop" || v.Reason != nft.CounterNoBackend || !strings.Contains(v.Rule, "l4lb nobackend") {
		t.Errorf("trace for a vip without a backend: %+v", v)
	}
	v = trace(t, "udp", "192.0.2.1:42000", "198.51.100.99:53", "")
	if v.Verdict != "pass" || v.Reason != "not_vip" || v.NoVIP == "" {
		t.Errorf("trace for no vip: %+v", v)
	}
}
