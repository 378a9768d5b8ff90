package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/lb"
)

// The state file of the previous release (overrides only) still reads, and the deny and
// override sections are each kept when the other is written.
func TestStateFileDenySection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	prev := `{
  "overrides": [
    {"vip": "web", "backend": "198.51.100.11", "drain": true}
  ]
}
`
	if err := os.WriteFile(path, []byte(prev), 0o600); err != nil {
		t.Fatal(err)
	}
	deny, err := loadDeny(path)
	if err != nil || len(deny) != 0 {
		t.Fatalf("previous release's file: deny %v, err %v", deny, err)
	}
	ov, err := loadOverrides(path)
	if err != nil || len(ov) != 1 {
		t.Fatalf("previous release's file: overrides %v, err %v", ov, err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/28"), netip.MustParsePrefix("2001:db8:bad::/48")}
	if err := saveDeny(path, want); err != nil {
		t.Fatal(err)
	}
	if ov2, err := loadOverrides(path); err != nil || !cmp.Equal(ov, ov2) {
		t.Errorf("overrides after saveDeny: %v (err %v), want %v", ov2, err, ov)
	}
	ov[lb.BackendKey{VIP: "web", Backend: netip.MustParseAddr("198.51.100.12")}] = lb.Override{Drain: true}
	if err := saveOverrides(path, ov); err != nil {
		t.Fatal(err)
	}
	got, err := loadDeny(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("deny after saveOverrides (-want +got):\n%s", diff)
	}
}
