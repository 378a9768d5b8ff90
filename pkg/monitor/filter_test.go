package monitor

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseFilter(t *testing.T) {
	cases := []struct {
		query   string
		want    Filter
		wantErr string // the parameter the error names
	}{
		{query: "", want: Filter{}},
		{query: "vip=web&reason=drop_deny&type=drop", want: Filter{VIP: "web", Reason: "drop_deny", Type: Drop}},
		{query: "src=198.51.100.7/24", want: Filter{Src: netip.MustParsePrefix("198.51.100.0/24")}},
		{query: "src=198.51.100.7", want: Filter{Src: netip.MustParsePrefix("198.51.100.7/32")}},
		{query: "src=2001:db8::1", want: Filter{Src: netip.MustParsePrefix("2001:db8::1/128")}},
		{query: "type=flow&sample=100&reason=moved", want: Filter{Type: Flow, SampleEvery: 100, Reason: ReasonMoved}},
		{query: "sample=1", want: Filter{SampleEvery: 1}},
		{query: "src=web", wantErr: "src"},
		{query: "type=drops", wantErr: "type"},
		{query: "sample=0", wantErr: "sample"},
		{query: "sample=-3", wantErr: "sample"},
		{query: "sample=x", wantErr: "sample"},
		{query: "sample=99999999999", wantErr: "sample"},
		{query: "type=drop&sample=10", wantErr: "sample"},
		{query: "type=flow&reason=drop_deny", wantErr: "reason"},
		{query: "type=drop&reason=new_flow", wantErr: "reason"},
		{query: "vip=a&vip=b", wantErr: "vip given 2 times"},
		{query: "vips=web", wantErr: `"vips"`},
	}
	for _, tc := range cases {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseFilter(q)
		if tc.wantErr != "" {
			if err == nil || !errors.Is(err, ErrBadFilter) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want one naming %s", tc.query, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got, addrs); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.query, diff)
		}
		// Query gives back what parses to the same filter.
		again, err := ParseFilter(got.Query())
		if err != nil || again != got {
			t.Errorf("%q: Query %v parses to %+v, %v", tc.query, got.Query(), again, err)
		}
	}
}

func TestMatch(t *testing.T) {
	ev := Event{
		Type: Drop, Reason: "drop_deny", Proto: "tcp", VIP: "web",
		Src: netip.MustParseAddrPort("198.51.100.7:40000"), Dst: netip.MustParseAddrPort("203.0.113.10:80"),
	}
	mapped := ev
	mapped.Src = netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("198.51.100.7").As16()), 40000)
	v6 := ev
	v6.Src = netip.MustParseAddrPort("[2001:db8::7]:40000")
	noSrc := ev
	noSrc.Src = netip.AddrPort{}
	cases := []struct {
		name string
		f    Filter
		ev   Event
		want bool
	}{
		{"everything", Filter{}, ev, true},
		{"vip", Filter{VIP: "web"}, ev, true},
		{"other vip", Filter{VIP: "dns"}, ev, false},
		{"reason", Filter{Reason: "drop_deny"}, ev, true},
		{"reason is exact", Filter{Reason: "drop"}, ev, false},
		{"type", Filter{Type: Drop}, ev, true},
		{"other type", Filter{Type: Flow}, ev, false},
		{"src", Filter{Src: netip.MustParsePrefix("198.51.100.0/24")}, ev, true},
		{"src outside", Filter{Src: netip.MustParsePrefix("198.51.100.8/29")}, ev, false},
		{"src v4-mapped", Filter{Src: netip.MustParsePrefix("198.51.100.0/24")}, mapped, true},
		{"src v6", Filter{Src: netip.MustParsePrefix("2001:db8::/32")}, v6, true},
		{"src v6 against v4", Filter{Src: netip.MustParsePrefix("198.51.100.0/24")}, v6, false},
		{"src unknown", Filter{Src: netip.MustParsePrefix("0.0.0.0/0")}, noSrc, false},
		{"all of them", Filter{VIP: "web", Reason: "drop_deny", Type: Drop, Src: netip.MustParsePrefix("198.51.100.7/32")}, ev, true},
	}
	for _, tc := range cases {
		if got := tc.f.Match(tc.ev); got != tc.want {
			t.Errorf("%s: Match %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestWantsFlows(t *testing.T) {
	for f, want := range map[Filter]bool{
		{}:                           true,
		{Type: Flow}:                 true,
		{Type: Drop}:                 false,
		{Reason: "drop_deny"}:        false,
		{Reason: ReasonMissNonSYN}:   true,
		{VIP: "web", SampleEvery: 9}: true,
	} {
		if got := f.WantsFlows(); got != want {
			t.Errorf("%+v: WantsFlows %v, want %v", f, got, want)
		}
	}
}
