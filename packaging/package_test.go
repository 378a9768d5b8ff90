package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l4lb/l4lb/internal/testutil"
)

// envDeb names a built package to test; without it the test runs `make package`.
const envDeb = "L4LB_DEB"

// envMirror overrides the Debian mirror debootstrap uses (default: the host's apt source).
const envMirror = "L4LB_DEBIAN_MIRROR"

// TestPrivilegedPackage installs the .deb into a fresh Debian 12 root made by debootstrap
// from the host's apt mirror (see debianRoot), then checks what an operator gets: `l4lb check` passes on
// the installed config, the version is the package's, the conffile, unit, completions,
// man pages and admin token are in place, the unit verifies with its man pages, and
// remove keeps the config while purge removes the state.
func TestPrivilegedPackage(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.RequireCommands(t, "debootstrap", "chroot", "dpkg-deb", "systemd-analyze")
	deb := currentDeb(t)
	version := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, "Version"))

	root := debianRoot(t)
	in := func(args ...string) string {
		t.Helper()
		return run(t, append([]string{"chroot", root}, args...)...)
	}
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp/l4lb.deb"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	in("dpkg", "-i", "/tmp/l4lb.deb")

	if got := in("l4lb", "check"); !strings.Contains(got, "/etc/l4lb/l4lb.yaml: ok") {
		t.Errorf("l4lb check on the installed config: %s", got)
	}
	if got := in("l4lb", "version"); !strings.HasPrefix(got, "l4lb "+version+" ") {
		t.Errorf("l4lb version: %q, want the package version %s", got, version)
	}
	if got := in("l4lb", "--version"); !strings.HasPrefix(got, "l4lb "+version+" ") {
		t.Errorf("l4lb --version: %q, want the package version %s", got, version)
	}
	if got := in("dpkg-query", "-W", "-f=${Conffiles}", "l4lb"); !strings.Contains(got, "/etc/l4lb/l4lb.yaml ") {
		t.Errorf("conffiles: %q, want /etc/l4lb/l4lb.yaml", got)
	}
	for path, mode := range map[string]os.FileMode{
		"usr/bin/l4lb":                               0o755,
		"etc/l4lb/l4lb.yaml":                         0o640,
		"etc/l4lb/token":                             0o600,
		"lib/systemd/system/l4lb.service":            0o644,
		"usr/share/bash-completion/completions/l4lb": 0o644,
		"usr/share/zsh/vendor-completions/_l4lb":     0o644,
		"usr/share/man/man1/l4lb.1.gz":               0o644,
		"usr/share/man/man1/l4lb-run.1.gz":           0o644,
		"var/lib/l4lb":                               os.ModeDir | 0o700,
	} {
		st, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("installed: %v", err)
			continue
		}
		if st.Mode() != mode {
			t.Errorf("/%s: mode %v, want %v", path, st.Mode(), mode)
		}
	}
	// The bash completion completes commands.
	if got := in("bash", "-c", "source /usr/share/bash-completion/completions/l4lb && type -t __start_l4lb"); got != "function\n" {
		t.Errorf("bash completion defines no __start_l4lb: %q", got)
	}
	if zsh := string(must(os.ReadFile(filepath.Join(root, "usr/share/zsh/vendor-completions/_l4lb")))); !strings.HasPrefix(zsh, "#compdef l4lb") {
		t.Errorf("zsh completion does not start with #compdef l4lb: %.40q", zsh)
	}
	// The unit as installed, with its man pages where man looks for them.
	unit := filepath.Join(t.TempDir(), "l4lb.service")
	b, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/l4lb.service"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(unit, []byte(strings.ReplaceAll(string(b), "/usr/bin/l4lb", filepath.Join(root, "usr/bin/l4lb"))), 0o644)
	verifyUnit(t, unit, []string{"MANPATH=" + filepath.Join(root, "usr/share/man")})

	// Upgrade in place (the same package again): the edited config stays.
	conf := filepath.Join(root, "etc/l4lb/l4lb.yaml")
	edited := append(must(os.ReadFile(conf)), []byte("# edited by the operator\n")...)
	if err := os.WriteFile(conf, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	in("dpkg", "--force-confold", "-i", "/tmp/l4lb.deb")
	if got := string(must(os.ReadFile(conf))); got != string(edited) {
		t.Error("reinstalling replaced the edited config")
	}
	in("dpkg", "-r", "l4lb")
	if _, err := os.Stat(conf); err != nil {
		t.Errorf("remove took the config away: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/bin/l4lb")); err == nil {
		t.Error("remove left /usr/bin/l4lb")
	}
	in("dpkg", "-P", "l4lb")
	for _, p := range []string{"etc/l4lb/l4lb.yaml", "etc/l4lb/token", "var/lib/l4lb"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("purge left /%s", p)
		}
	}
}

// debianRoot returns a fresh Debian 12 (bookworm) minbase root in a temporary directory.
func debianRoot(t *testing.T) string { return debianRootWith(t, "minbase", nil) }

// debianRootWith returns a fresh Debian 12 minbase root with the packages include in a
// temporary directory. debootstrap makes it once, and a tarball of that pristine root
// (named by flavour) is kept in the user's cache directory; later runs unpack a new copy
// of it (seconds instead of minutes). Delete the tarball to bootstrap afresh.
func debianRootWith(t *testing.T, flavour string, include []string) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(cacheDir(), "l4lb", "debootstrap-bookworm-"+flavour+".tar")
	if _, err := os.Stat(tarball); err != nil && os.Getenv("L4LB_VMTEST") != "" {
		// The kernel suite's VM has no network: it uses the host's cached root only.
		t.Skipf("no cached Debian root %s in the VM (the host's make test makes it)", tarball)
	}
	if _, err := os.Stat(tarball); err != nil {
		start := time.Now()
		args := []string{"--variant=minbase"}
		if len(include) > 0 {
			args = append(args, "--include="+strings.Join(include, ","))
		}
		args = append(args, "bookworm", root, mirror())
		if out, err := exec.Command("debootstrap", args...).CombinedOutput(); err != nil {
			t.Fatalf("debootstrap from %s: %v\n%s", mirror(), err, tail(out))
		}
		t.Logf("debootstrap bookworm %s from %s: %s", flavour, mirror(), time.Since(start).Round(time.Second))
		if err := os.MkdirAll(filepath.Dir(tarball), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := tarball + ".tmp"
		run(t, "tar", "-C", root, "--numeric-owner", "-cf", tmp, ".")
		if err := os.Rename(tmp, tarball); err != nil {
			t.Fatal(err)
		}
		return root
	}
	run(t, "tar", "-C", root, "--numeric-owner", "-xpf", tarball)
	t.Logf("Debian 12 root unpacked from %s (made by debootstrap; delete it to bootstrap again)", tarball)
	return root
}

func cacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return d
	}
	return os.TempDir()
}

// builtDeb is the package currentDeb made, shared by the tests of one run.
var builtDeb string

// currentDeb is the package under test: $L4LB_DEB, or what `make package` builds (once
// per test binary).
func currentDeb(t *testing.T) string {
	t.Helper()
	if deb := os.Getenv(envDeb); deb != "" {
		return deb
	}
	if builtDeb != "" {
		return builtDeb
	}
	testutil.RequireCommands(t, "make", "go")
	start := time.Now()
	out, err := exec.Command("make", "-C", "..", "package").CombinedOutput()
	if err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	matches, _ := filepath.Glob("../bin/l4lb_*_amd64.deb")
	if len(matches) != 1 {
		t.Fatalf("make package made %v, want one bin/l4lb_*_amd64.deb", matches)
	}
	builtDeb = matches[0]
	t.Logf("make package: %s in %s", builtDeb, time.Since(start).Round(time.Second))
	return builtDeb
}

// previousDeb builds the package of an earlier release from git history with that
// release's own make package (cached under the user's cache directory), versioned as
// version.sh versions a snapshot: the commit's time and hash. Without that history (a
// shallow clone) the test is skipped, saying so.
func previousDeb(t *testing.T, release string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(cacheDir(), "l4lb-test", "l4lb-"+release+".deb")
	if _, err := os.Stat(deb); err == nil {
		return deb
	}
	if out, err := exec.Command("git", "-C", root, "cat-file", "-e", release+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("release %s not in the git history (shallow clone or no git: %v %s); fetch it to run the upgrade", release, err, strings.TrimSpace(string(out)))
	}
	meta := strings.Fields(run(t, "env", "TZ=UTC", "git", "-C", root, "log", "-1", "--date=format-local:%Y%m%d%H%M%S", "--format=%cd %h %H", release))
	version, revision := "0.0.0~git"+meta[0]+"."+meta[1], meta[2]
	src := t.TempDir()
	run(t, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, release, src)
	start := time.Now()
	build := exec.Command("make", "-C", src, "package", "VERSION="+version, "REVISION="+revision)
	build.Env = append(os.Environ(), "TZ=UTC")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make package of %s: %v\n%s", release, err, tail(out))
	}
	built, _ := filepath.Glob(filepath.Join(src, "bin", "l4lb_*_amd64.deb"))
	if len(built) != 1 {
		t.Fatalf("make package of %s made %v", release, built)
	}
	if err := os.MkdirAll(filepath.Dir(deb), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "cp", built[0], deb+".tmp")
	if err := os.Rename(deb+".tmp", deb); err != nil {
		t.Fatal(err)
	}
	t.Logf("package of %s (%s) built in %s", release, version, time.Since(start).Round(time.Second))
	return deb
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// mirror is the Debian mirror of the host's apt sources (deb822 or one-line form), so
// debootstrap goes where apt-get goes.
func mirror() string {
	if m := os.Getenv(envMirror); m != "" {
		return m
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	files = append(files, "/etc/apt/sources.list")
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			var uri string
			switch {
			case len(fields) >= 2 && fields[0] == "URIs:":
				uri = fields[1]
			case len(fields) >= 3 && fields[0] == "deb" && !strings.HasPrefix(fields[1], "["):
				uri = fields[1]
			}
			if strings.HasSuffix(strings.TrimSuffix(uri, "/"), "/debian") {
				fh.Close()
				return uri
			}
		}
		fh.Close()
	}
	return "http://deb.debian.org/debian"
}
