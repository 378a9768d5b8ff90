package vmtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNoKernel is returned when no installed kernel matches the asked series.
var ErrNoKernel = errors.New("no installed kernel of that series")

// Kernel is an installed distribution kernel: its image in /boot and its modules.
type Kernel struct {
	Series  string // what was asked for: "6.1", "6.12"
	Release string // uname -r: "6.1.0-56-amd64"
	Image   string // /boot/vmlinuz-RELEASE
	Modules string // /lib/modules/RELEASE
}

// Default locations of installed kernels.
const (
	BootDir    = "/boot"
	ModulesDir = "/lib/modules"
)

// FindKernel returns the newest installed kernel of a series ("6.1" finds
// 6.1.0-56-amd64, not 6.12.x), so a security update that installs a new ABI of the same
// series keeps working without changing anything here.
func FindKernel(series string) (Kernel, error) {
	return findKernel(BootDir, ModulesDir, series)
}

func findKernel(boot, modules, series string) (Kernel, error) {
	images, err := filepath.Glob(filepath.Join(boot, "vmlinuz-*"))
	if err != nil {
		return Kernel{}, err
	}
	var found []Kernel
	for _, img := range images {
		rel := strings.TrimPrefix(filepath.Base(img), "vmlinuz-")
		if !inSeries(rel, series) {
			continue
		}
		mods := filepath.Join(modules, rel)
		if _, err := os.Stat(filepath.Join(mods, "modules.dep")); err != nil {
			continue
		}
		found = append(found, Kernel{Series: series, Release: rel, Image: img, Modules: mods})
	}
	if len(found) == 0 {
		return Kernel{}, fmt.Errorf("kernel %s: %w (want %s/vmlinuz-%s.* and its modules in %s; make deps installs the pinned kernels)",
			series, ErrNoKernel, boot, series, modules)
	}
	sort.Slice(found, func(i, j int) bool { return versionLess(found[i].Release, found[j].Release) })
	return found[len(found)-1], nil
}

// inSeries tells whether a kernel release belongs to a series: 6.1.0-56-amd64 and
// 6.1.192 are 6.1; 6.12.117+deb12-amd64 is 6.12, not 6.1.
func inSeries(release, series string) bool {
	if !strings.HasPrefix(release, series) {
		return false
	}
	rest := release[len(series):]
	return rest == "" || rest[0] == '.' || rest[0] == '-' || rest[0] == '+'
}

// versionLess compares kernel releases by their numbers in order (6.1.0-9 < 6.1.0-56).
func versionLess(a, b string) bool {
	na, nb := numbers(a), numbers(b)
	for i := 0; i < len(na) && i < len(nb); i++ {
		if na[i] != nb[i] {
			return na[i] < nb[i]
		}
	}
	if len(na) != len(nb) {
		return len(na) < len(nb)
	}
	return a < b
}

func numbers(s string) []int {
	var out []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r < '0' || r > '9' }) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}
