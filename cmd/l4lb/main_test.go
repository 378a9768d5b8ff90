package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/internal/buildinfo"
	"github.com/l4lb/l4lb/internal/limits"
)

func run(args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := newRootCmd(&out, &errb)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String() + errb.String(), err
}

func TestVersion(t *testing.T) {
	want := "l4lb " + buildinfo.Get().String() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := run(args...)
		if err != nil || out != want {
			t.Errorf("%v: %q, %v; want %q", args, out, err, want)
		}
	}
	out, err := run("version", "-o", "json")
	var got buildinfo.Info
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.Version == "" || got.GoVersion != runtime.Version() {
		t.Errorf("version -o json: %q, %v", out, err)
	}
}

// TestVersionStamped builds the binary as a packager would, with a version at link time,
// and checks what it prints; where the toolchain records the commit (a git checkout,
// not a linked worktree), it must be the checkout's HEAD.
func TestVersionStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "l4lb")
	build := exec.Command("go", "build", "-o", bin, "-ldflags", "-X github.com/l4lb/l4lb/internal/buildinfo.version=9.9.9-test", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "-o", "json").Output()
	var got buildinfo.Info
	if err != nil || json.Unmarshal(out, &got) != nil {
		t.Fatalf("version -o json: %q, %v", out, err)
	}
	if got.Version != "9.9.9-test" {
		t.Errorf("version %q, want the one set at link time", got.Version)
	}
	if got.Revision == "" {
		t.Logf("no commit recorded (-buildvcs=false, a linked worktree or no git): %+v", got)
		return
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("git rev-parse: %v", err)
	}
	if got.Revision != strings.TrimSpace(string(head)) || got.Time.IsZero() {
		t.Errorf("recorded %+v, want revision %s with its time", got, head)
	}
}

func TestDecapRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"decap", "--iface", "eth0"}, "at least one --vip"},
		{[]string{"decap", "--iface", "eth0", "--vip", "203.0.113.300"}, `--vip "203.0.113.300"`},
		{[]string{"decap", "--vip", "203.0.113.10"}, "--iface is required"},
		// A backend upgraded with its old command line is told what to add.
		{[]string{"decap", "--iface", "eth0", "--vip", "203.0.113.10"}, "--allow-from is required"},
		{[]string{"decap", "--iface", "eth0", "--vip", "203.0.113.10"}, "--allow-from 0.0.0.0/0 --allow-from ::/0 to accept any outer source"},
		{[]string{"decap", "--iface", "eth0", "--vip", "203.0.113.10", "--allow-from", "192.0.2.0/33"}, `--allow-from "192.0.2.0/33"`},
		{[]string{"decap", "--iface", "eth0", "--vip", "203.0.113.10", "--allow-from", "lb1"}, `--allow-from "lb1"`},
		{[]string{"decap", "--iface", "eth0", "--vip", "203.0.113.10", "--allow-from", "::ffff:192.0.2.0/80"}, "v4-mapped prefix shorter than /96"},
	} {
		_, err := run(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

func TestParseAllowFrom(t *testing.T) {
	got, err := parseAllowFrom([]string{"192.0.2.0/26", "192.0.2.77", "2001:db8:e:1::/64", "2001:db8::1", "192.0.2.130/25", "::ffff:198.51.100.0/120", "0.0.0.0/0", "::/0"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/26"), netip.MustParsePrefix("192.0.2.77/32"),
		netip.MustParsePrefix("2001:db8:e:1::/64"), netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("192.0.2.128/25"), netip.MustParsePrefix("198.51.100.0/24"),
		netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"),
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	many := slices.Repeat([]string{"192.0.2.0/24"}, limits.MaxDecapAllow+1)
	if _, err := parseAllowFrom(many); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("%d ipv4 prefixes: error %v, want a limit", len(many), err)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// nexthop.mac set: check's warnings do not depend on this host's routes (check_test.go).
	const cfg = "interfaces: [eth0]\nnexthop: {mac: \"02:00:00:00:00:01\"}\nencap: {source4: 192.0.2.0/24}\nvips:\n  - {name: web, address: 203.0.113.10, port: 80, protocol: tcp, backends: [{address: 198.51.100.11}]}\n"
	for _, tc := range []struct {
		name, yaml string
		wantErr    bool
		wantOut    []string
	}{
		{name: "ok", yaml: cfg, wantOut: []string{"ok.yaml: ok (1 vips)"}},
		{name: "warnings", yaml: cfg + "admin: {listen: 0.0.0.0:9100, token_file: /etc/l4lb/token}\n",
			wantOut: []string{"warnings.yaml:6: warning: admin.listen: 0.0.0.0:9100 is not a loopback address", "warnings.yaml: ok (1 vips, 1 warning(s))"}},
		{name: "problems", yaml: "interfaces: l0\n", wantErr: true, wantOut: []string{`problems.yaml:1: interfaces: "l0": want a list, e.g. [l0]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := write(strings.ReplaceAll(tc.name, " ", "")+".yaml", tc.yaml)
			out, err := run("check", "-c", path)
			if (err != nil) != tc.wantErr {
				t.Errorf("error %v, want error: %v", err, tc.wantErr)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, dir+"/"+w) {
					t.Errorf("output %q does not contain %q", out, dir+"/"+w)
				}
			}
		})
	}
}
