package daemon

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/admin"
)

// A reload applies the difference between the old and the new prefilter.deny: prefixes
// added at run time stay (one also configured included), counters of prefixes kept stay,
// and the sources shown follow the new configuration.
func TestReloadDenyList(t *testing.T) {
	n := startTestNode(t, testConfig+denyVIPs+"prefilter:\n  deny: [203.0.113.96/29, 2001:db8:bad::/48, 192.0.2.128/28]\n")
	// One run-time prefix is configured too: it stays when the configuration drops it.
	for _, p := range []string{"198.51.100.64/28", "192.0.2.128/28"} {
		if err := n.DenyAdd([]netip.Prefix{netip.MustParsePrefix(p)}, admin.DenyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n.dp.deny[netip.MustParsePrefix("203.0.113.96/29")] = 7 // drops counted so far

	if err := n.reload(t, testConfig+denyVIPs+"prefilter:\n  deny: [203.0.113.96/29, 2001:db8:beef::/48]\n"); err != nil {
		t.Fatalf("reload with another prefilter.deny: %v", err)
	}
	want := []string{"192.0.2.128/28", "198.51.100.64/28", "2001:db8:beef::/48", "203.0.113.96/29"}
	if diff := cmp.Diff(want, n.dp.listed()); diff != "" {
		t.Errorf("deny list after the reload (-want +got):\n%s", diff)
	}
	if got := n.dp.deny[netip.MustParsePrefix("203.0.113.96/29")]; got != 7 {
		t.Errorf("203.0.113.96/29, in both configurations: %d drops, want its 7 kept", got)
	}
	list, err := n.DenyList()
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]string{}
	for _, e := range list.([]DenyEntry) {
		sources[e.Prefix.String()] = e.Source
	}
	wantSources := map[string]string{"192.0.2.128/28": "runtime", "198.51.100.64/28": "runtime", "2001:db8:beef::/48": "config", "203.0.113.96/29": "config"}
	if diff := cmp.Diff(wantSources, sources); diff != "" {
		t.Errorf("sources (-want +got):\n%s", diff)
	}
	// The removed configured prefix is not one `deny del` can find, the new one is refused.
	if err := n.DenyDelete([]netip.Prefix{netip.MustParsePrefix("2001:db8:beef::/48")}); !errors.Is(err, admin.ErrBadRequest) {
		t.Errorf("deny del of a configured prefix: %v, want it refused", err)
	}

	// Back to no prefilter section: only the run-time prefixes stay.
	if err := n.reload(t, testConfig+denyVIPs); err != nil {
		t.Fatalf("reload without prefilter: %v", err)
	}
	if diff := cmp.Diff([]string{"192.0.2.128/28", "198.51.100.64/28"}, n.dp.listed()); diff != "" {
		t.Errorf("deny list after removing prefilter (-want +got):\n%s", diff)
	}
}

// A rejected reload changes nothing: not the deny list, not the configuration in use.
func TestReloadRejectedKeepsDenyList(t *testing.T) {
	const cfg = testConfig + denyVIPs + "prefilter:\n  deny: [203.0.113.96/29]\n"
	other := testConfig + denyVIPs + "prefilter:\n  deny: [2001:db8:bad::/48]\n"
	for _, tc := range []struct {
		name, cfg           string
		failAdd, failDelete error
	}{
		{"a restart-only key changed too", strings.Replace(cfg, "eth0", "eth1", 1) + "  deny_files: []\n", nil, nil},
		{"the data plane refuses the removal", other, nil, errors.New("injected")},
		{"the data plane refuses the addition", other, errors.New("injected"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startTestNode(t, cfg)
			n.dp.failAdd, n.dp.failDelete = tc.failAdd, tc.failDelete
			err := n.reload(t, strings.Replace(tc.cfg, "203.0.113.96/29", "203.0.113.96/29, 198.51.100.0/28", 1))
			if err == nil {
				t.Fatal("reload accepted")
			}
			if diff := cmp.Diff([]string{"203.0.113.96/29"}, n.dp.listed()); diff != "" {
				t.Errorf("deny list after a rejected reload (-want +got):\n%s", diff)
			}
			if got := n.cfg.Prefilter.Deny; !slices.Equal(got, []string{"203.0.113.96/29"}) {
				t.Errorf("configuration in use: prefilter.deny %v", got)
			}
			if r := n.view().LastReload; r == nil || r.OK {
				t.Errorf("last reload %+v, want it rejected", r)
			}
		})
	}
}
