package vmtest

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func touch(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFindKernelBySeries(t *testing.T) {
	dir := t.TempDir()
	boot, mods := filepath.Join(dir, "boot"), filepath.Join(dir, "modules")
	for _, rel := range []string{"6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.117+deb12-amd64", "6.12.9+deb12-amd64", "5.10.0-28-amd64"} {
		touch(t, filepath.Join(boot, "vmlinuz-"+rel), "")
		touch(t, filepath.Join(mods, rel, "modules.dep"), "")
	}
	touch(t, filepath.Join(boot, "vmlinuz-6.1.0-99-amd64"), "") // no modules: not usable
	for series, want := range map[string]string{"6.1": "6.1.0-56-amd64", "6.12": "6.12.117+deb12-amd64", "5.10": "5.10.0-28-amd64"} {
		k, err := findKernel(boot, mods, series)
		if err != nil {
			t.Fatalf("%s: %v", series, err)
		}
		if k.Release != want || k.Image != filepath.Join(boot, "vmlinuz-"+want) || k.Modules != filepath.Join(mods, want) || k.Series != series {
			t.Errorf("%s: got %+v, want release %s", series, k, want)
		}
	}
	if _, err := findKernel(boot, mods, "5.15"); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("5.15: want ErrNoKernel naming make deps, got %v", err)
	}
}

func TestInSeries(t *testing.T) {
	for _, tc := range []struct {
		rel, series string
		want        bool
	}{
		{"6.1.0-56-amd64", "6.1", true}, {"6.12.117+deb12-amd64", "6.1", false}, {"6.12.117+deb12-amd64", "6.12", true},
		{"6.1", "6.1", true}, {"6.10.3", "6.1", false}, {"5.15.0-91-generic", "5.15", true},
	} {
		if got := inSeries(tc.rel, tc.series); got != tc.want {
			t.Errorf("inSeries(%s, %s) = %v", tc.rel, tc.series, got)
		}
	}
}

func TestModuleLoadOrder(t *testing.T) {
	dir := t.TempDir()
	touch(t, filepath.Join(dir, "modules.dep"), `kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz
kernel/fs/netfs/netfs.ko.xz:
kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/drivers/char/hw_random/virtio-rng.ko.xz:
kernel/drivers/net/veth.ko.xz:
`)
	touch(t, filepath.Join(dir, "modules.builtin"), "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/virtio/virtio.ko\n")
	got, err := moduleLoadOrder(dir, bootModules)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/fs/netfs/netfs.ko.xz", "kernel/net/9p/9pnet.ko.xz", "kernel/net/9p/9pnet_virtio.ko.xz", "kernel/fs/9p/9p.ko.xz", "kernel/drivers/char/hw_random/virtio-rng.ko.xz"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("load order (-want +got):\n%s", diff)
	}
	if _, err := moduleLoadOrder(dir, []string{"nope"}); err == nil {
		t.Error("an unknown module gave no error")
	}
}

func TestReadModuleDecompressesXZ(t *testing.T) {
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz not installed")
	}
	dir := t.TempDir()
	elf := []byte("\x7fELF module bytes")
	p := filepath.Join(dir, "m.ko")
	if err := os.WriteFile(p, elf, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("xz", p).CombinedOutput(); err != nil {
		t.Fatalf("xz: %v: %s", err, out)
	}
	got, err := readModule(p + ".xz")
	if err != nil || !bytes.Equal(got, elf) {
		t.Errorf("readModule = %q, %v", got, err)
	}
	if stripCompression("kernel/fs/9p/9p.ko.xz") != "kernel/fs/9p/9p.ko" || moduleName("a/virtio-rng.ko.zst") != "virtio_rng" {
		t.Error("module names")
	}
}

// readNewc parses a newc cpio into name -> (mode, data).
func readNewc(t *testing.T, b []byte) map[string]archiveFile {
	t.Helper()
	out := map[string]archiveFile{}
	for off := 0; ; {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, namesize := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		off = (off + 110 + namesize + 3) &^ 3
		data := b[off : off+size]
		off = (off + size + 3) &^ 3
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out[name] = archiveFile{mode: uint32(mode), data: data}
	}
}

func TestArchiveIsNewcWithParentsFirst(t *testing.T) {
	a := newArchive()
	a.addFile("init", 0o755, []byte("#!/bin/sh\n"))
	a.addFile("lib/modules/kernel/fs/9p/9p.ko", 0o644, []byte("abc"))
	a.addSymlink("bin/sh", "busybox")
	var buf bytes.Buffer
	if err := a.writeTo(&buf); err != nil {
		t.Fatal(err)
	}
	got := readNewc(t, buf.Bytes())
	want := map[string]uint32{
		"bin": sIFDIR | 0o755, "lib": sIFDIR | 0o755, "lib/modules": sIFDIR | 0o755, "lib/modules/kernel": sIFDIR | 0o755,
		"lib/modules/kernel/fs": sIFDIR | 0o755, "lib/modules/kernel/fs/9p": sIFDIR | 0o755,
		"init": sIFREG | 0o755, "lib/modules/kernel/fs/9p/9p.ko": sIFREG | 0o644, "bin/sh": sIFLNK | 0o777,
	}
	modes := map[string]uint32{}
	for n, f := range got {
		modes[n] = f.mode
	}
	if diff := cmp.Diff(want, modes); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
	if string(got["lib/modules/kernel/fs/9p/9p.ko"].data) != "abc" || string(got["bin/sh"].data) != "busybox" {
		t.Errorf("contents: %s", hex.Dump(buf.Bytes()[:256]))
	}
	// Directories come before what they hold.
	s := buf.String()
	if strings.Index(s, "lib/modules/kernel/fs/9p\x00") > strings.Index(s, "9p.ko\x00") {
		t.Error("a file precedes its directory")
	}
}

func TestRunScriptQuotes(t *testing.T) {
	s := runScript("/w", Command{Args: []string{"/w/x.test", "-test.run", "A|B's"}, Env: []string{"K=a b"}, Dir: "/w/x"})
	for _, want := range []string{"export K='a b'\n", "cd '/w/x' || exit 126\n", `exec '/w/x.test' '-test.run' 'A|B'\''s'` + "\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("run.sh lacks %q:\n%s", want, s)
		}
	}
}

func TestSuiteBookkeeping(t *testing.T) {
	log := `=== RUN   TestA
--- PASS: TestA (0.01s)
=== RUN   TestB
    --- FAIL: TestB/sub (0.00s)
--- FAIL: TestB (0.02s)
--- SKIP: TestC (0.00s)
=== RUN   FuzzX
--- PASS: FuzzX (0.10s)
FAIL
`
	p, f, s, failed := countTests(log)
	if p != 2 || f != 1 || s != 1 || !cmp.Equal(failed, []string{"TestB"}) {
		t.Errorf("countTests = %d %d %d %v", p, f, s, failed)
	}
	var w timedWriter
	for _, l := range []string{"suite: start xdp\n", "noise\n", "suite: end xdp 1\n", "suite: start daemon\n"} {
		if _, err := w.Write([]byte(l)); err != nil {
			t.Fatal(err)
		}
	}
	if c, ok := w.status("xdp"); !ok || c != 1 {
		t.Errorf("xdp status %d %v", c, ok)
	}
	if _, ok := w.status("daemon"); ok {
		t.Error("daemon has a status before it ended")
	}
	r := KernelResult{Packages: []PackageResult{{ExitCode: 0, Passed: 3}}}
	if !r.OK() {
		t.Error("a passing result is not OK")
	}
	r.Packages = append(r.Packages, PackageResult{ExitCode: -1})
	if r.OK() {
		t.Error("a package that did not run is OK")
	}
}
