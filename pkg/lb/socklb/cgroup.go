package socklb

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrNoCgroup2: no cgroup v2 hierarchy is mounted.
var ErrNoCgroup2 = errors.New("no cgroup2 mount found")

// DefaultCgroup returns the root of the cgroup v2 hierarchy as this process sees it,
// read from /proc/self/mountinfo (never assumed to be /sys/fs/cgroup).
func DefaultCgroup() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	return cgroup2Mount(f)
}

// cgroup2Mount parses mountinfo: the first mount of type cgroup2 whose root is the
// hierarchy's root ("/"), else the first cgroup2 mount at all.
func cgroup2Mount(r io.Reader) (string, error) {
	var any string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		mnt := unescapeMountinfo(fields[4])
		if fields[3] == "/" {
			return mnt, nil
		}
		if any == "" {
			any = mnt
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	if any != "" {
		return any, nil
	}
	return "", ErrNoCgroup2
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space, ...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CgroupPaths maps cgroup ids (as sampled connects carry them) to their paths relative
// to the cgroup v2 root, walking the hierarchy once; ids not found are left out.
func CgroupPaths(ids map[uint64]bool) map[uint64]string {
	out := map[uint64]string{}
	root, err := DefaultCgroup()
	if err != nil {
		return out
	}
	filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Stat(path, &st) == nil && ids[st.Ino] {
			rel, _ := filepath.Rel(root, path)
			out[st.Ino] = "/" + strings.TrimPrefix(rel, ".")
			if len(out) == len(ids) {
				return filepath.SkipAll
			}
		}
		return nil
	})
	return out
}
