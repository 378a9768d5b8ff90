package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersionScript runs packaging/version.sh in a scratch git repository through the
// life of a project: no tag, a tag, commits after it, uncommitted changes. Each version
// must be a valid Debian version that sorts after the one before.
func TestVersionScript(t *testing.T) {
	for _, c := range []string{"git", "dpkg"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s not installed", c)
		}
	}
	dir := t.TempDir()
	script, err := os.ReadFile("version.sh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "packaging"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "packaging", "version.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	when := "2025-06-01T10:00:00Z"
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_COMMITTER_DATE="+when, "GIT_AUTHOR_DATE="+when)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	version := func() string {
		t.Helper()
		out, err := exec.Command(filepath.Join(dir, "packaging", "version.sh")).CombinedOutput()
		if err != nil {
			t.Fatalf("version.sh: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "first")
	short := func() string { return git("rev-parse", "--short=7", "HEAD") }

	var got []string
	check := func(re string) {
		t.Helper()
		v := version()
		if !regexp.MustCompile("^" + re + "$").MatchString(v) {
			t.Errorf("version %q, want %s", v, re)
		}
		got = append(got, v)
	}
	check(`0\.0\.0~git20250601100000\.` + short())
	// A later snapshot of the same day sorts after the first, whatever its hash.
	when = "2025-06-01T10:30:00Z"
	os.WriteFile(filepath.Join(dir, "g"), []byte("x"), 0o644)
	git("add", "g")
	git("commit", "-qm", "same day")
	check(`0\.0\.0~git20250601103000\.` + short())
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	git("add", "f")
	check(`0\.0\.0~git20250601103000\.` + short() + `\+dirty`)
	git("commit", "-qm", "second")
	git("tag", "v1.2.3")
	check(`1\.2\.3`)
	os.WriteFile(filepath.Join(dir, "f"), []byte("y"), 0o644)
	git("commit", "-qam", "third")
	check(`1\.2\.3\+1\.g` + short())
	git("tag", "v1.10.0")
	check(`1\.10\.0`)

	for i := 1; i < len(got); i++ {
		if got[i-1] == got[i] {
			continue
		}
		if out, err := exec.Command("dpkg", "--compare-versions", got[i-1], "lt", got[i]).CombinedOutput(); err != nil {
			t.Errorf("dpkg does not sort %s before %s: %v %s", got[i-1], got[i], err, out)
		}
	}
	t.Logf("versions: %v", got)
}
