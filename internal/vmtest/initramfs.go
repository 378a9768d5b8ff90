package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultCacheDir holds the initramfs images, one per kernel release (and per version of
// the init script), so only the first boot of a kernel pays for building one.
const DefaultCacheDir = "/var/cache/l4lb-vmtest"

// EnvCacheDir overrides DefaultCacheDir.
const EnvCacheDir = "L4LB_VMTEST_CACHE"

// Busybox is the static busybox (Debian's busybox-static) that runs /init.
const Busybox = "/bin/busybox"

// bootModules are what the initramfs loads before it can reach the host's root: the
// virtio PCI transport, 9p over virtio, and the virtio RNG so getrandom never waits.
// Everything else is loaded later by the host's modprobe from the host's
// /lib/modules, which the 9p mount makes visible.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "virtio_rng"}

// initScript is /init. It loads the boot modules, mounts the host's root read-only at
// /hostroot with fresh proc, sys, dev, tmpfs on /tmp and /run, bpffs and cgroup2, mounts
// the run's work directory (writable, at the same path as on the host), and runs its
// run.sh as root in a chroot. Kernel autoloading goes through the host's modprobe.
const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /hostroot /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
dmesg -n 1
fail() { echo "vmtest: $*"; echo "vmtest: exit status 125"; sync; poweroff -f; sleep 10; }
echo "vmtest: kernel $(uname -r) booted"
for m in $(cat /etc/vmtest-modules); do
	insmod "/lib/modules/$m" || fail "insmod $m failed"
done
R=/hostroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot $R || fail "mount the host root over 9p failed"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs tmpfs $R/tmp
mount -t tmpfs tmpfs $R/run
mount -t bpf bpf $R/sys/fs/bpf || fail "mount bpffs failed"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || fail "mount cgroup2 failed"
dir=$(sed -n 's/.*vmtest\.dir=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -n "$dir" ] || fail "no vmtest.dir on the kernel command line"
mkdir -p "$R$dir" 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmtest "$R$dir" || fail "mount the work directory $dir failed"
echo /sbin/vmtest-modprobe > /proc/sys/kernel/modprobe
chroot $R /bin/sh -c 'ip link set lo up' || fail "no ip command on the host root"
echo "vmtest: running"
chroot $R /bin/sh "$dir/run.sh" </dev/null
echo "vmtest: exit status $?"
sync
poweroff -f
sleep 10
`

// modprobeHelper is the kernel's modprobe (request_module): the host's kmod, which
// reads the host's /lib/modules/RELEASE (xz and zstd modules included).
const modprobeHelper = `#!/bin/busybox sh
exec /bin/busybox chroot /hostroot /sbin/modprobe "$@"
`

// Initramfs returns the path of the kernel's initramfs in cacheDir, building it if it is
// not there yet.
func Initramfs(k Kernel, cacheDir string) (string, error) {
	if cacheDir == "" {
		cacheDir = CacheDir()
	}
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return "", fmt.Errorf("read busybox (install busybox-static): %w", err)
	}
	h := sha256.New()
	h.Write([]byte(initScript))
	h.Write([]byte(modprobeHelper))
	h.Write([]byte(strings.Join(bootModules, " ")))
	h.Write(bb)
	if fi, err := os.Stat(filepath.Join(k.Modules, "modules.dep")); err == nil {
		fmt.Fprint(h, fi.Size(), fi.ModTime().UnixNano())
	}
	out := filepath.Join(cacheDir, fmt.Sprintf("initramfs-%s-%s.cpio.gz", k.Release, hex.EncodeToString(h.Sum(nil))[:12]))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create initramfs cache: %w", err)
	}
	a := newArchive()
	a.addFile("init", 0o755, []byte(initScript))
	a.addFile("bin/busybox", 0o755, bb)
	a.addFile("sbin/vmtest-modprobe", 0o755, []byte(modprobeHelper))
	a.addDir("lib/modules")
	order, err := moduleLoadOrder(k.Modules, bootModules)
	if err != nil {
		return "", err
	}
	var list []string
	for _, rel := range order {
		data, err := readModule(filepath.Join(k.Modules, rel))
		if err != nil {
			return "", err
		}
		name := stripCompression(rel)
		a.addFile("lib/modules/"+name, 0o644, data)
		list = append(list, name)
	}
	a.addFile("etc/vmtest-modules", 0o644, []byte(strings.Join(list, "\n")+"\n"))

	tmp, err := os.CreateTemp(cacheDir, ".initramfs-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	zw := gzip.NewWriter(tmp)
	if err := a.writeTo(zw); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("write initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", err
	}
	// Images of this release built from older inputs are of no more use.
	old, _ := filepath.Glob(filepath.Join(cacheDir, "initramfs-"+k.Release+"-*.cpio.gz"))
	for _, f := range old {
		if f != out {
			os.Remove(f)
		}
	}
	return out, nil
}

// CacheDir is $L4LB_VMTEST_CACHE or DefaultCacheDir.
func CacheDir() string {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return d
	}
	return DefaultCacheDir
}

// moduleLoadOrder resolves names (as modprobe spells them) through modules.dep and
// returns the module files, relative to the modules directory, each after its
// dependencies. Modules built into the kernel (modules.builtin) are left out.
func moduleLoadOrder(modDir string, names []string) ([]string, error) {
	deps, err := readModulesDep(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if f, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(f)) {
			builtin[moduleName(l)] = true
		}
	}
	byName := map[string]string{}
	for file := range deps {
		byName[moduleName(file)] = file
	}
	var order []string
	seen := map[string]bool{}
	var visit func(file string)
	visit = func(file string) {
		if seen[file] {
			return
		}
		seen[file] = true
		for _, d := range deps[file] {
			visit(d)
		}
		order = append(order, file)
	}
	for _, n := range names {
		n = strings.ReplaceAll(n, "-", "_")
		if builtin[n] {
			continue
		}
		file, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("module %s: neither in %s/modules.dep nor built in", n, modDir)
		}
		visit(file)
	}
	return order, nil
}

func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		out[file] = strings.Fields(rest)
	}
	return out, sc.Err()
}

// moduleName turns kernel/fs/9p/9p.ko.xz into 9p and virtio-rng.ko into virtio_rng.
func moduleName(file string) string {
	base := stripCompression(filepath.Base(file))
	return strings.ReplaceAll(strings.TrimSuffix(base, ".ko"), "-", "_")
}

func stripCompression(p string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(p, ".ko"+ext) {
			return strings.TrimSuffix(p, ext)
		}
	}
	return p
}

// readModule returns a module's ELF: busybox insmod reads no compressed modules (Debian's
// 6.12 ships .ko.xz), so they are decompressed here.
func readModule(path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".zst"):
		tool = "zstd"
	case strings.HasSuffix(path, ".gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		var b bytes.Buffer
		if _, err := b.ReadFrom(zr); err != nil {
			return nil, fmt.Errorf("decompress %s: %w", path, err)
		}
		return b.Bytes(), nil
	default:
		return nil, fmt.Errorf("module %s: unknown format", path)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("decompress %s with %s (install xz-utils / zstd): %w: %s", path, tool, err, stderr.String())
	}
	return out, nil
}
