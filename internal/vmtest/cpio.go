package vmtest

import (
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// archive is an in-memory initramfs: a newc cpio with the directories each file needs.
type archive struct {
	dirs  map[string]bool
	files map[string]archiveFile
}

type archiveFile struct {
	mode uint32 // permission bits plus S_IFREG or S_IFLNK
	data []byte // contents, or the target of a symlink
}

const (
	sIFDIR = 0o040000
	sIFREG = 0o100000
	sIFLNK = 0o120000
)

func newArchive() *archive {
	return &archive{dirs: map[string]bool{}, files: map[string]archiveFile{}}
}

func (a *archive) addDir(p string) {
	p = strings.Trim(path.Clean(p), "/")
	for p != "" && p != "." {
		a.dirs[p] = true
		p = path.Dir(p)
	}
}

func (a *archive) addFile(p string, perm uint32, data []byte) {
	p = strings.Trim(path.Clean(p), "/")
	a.addDir(path.Dir(p))
	a.files[p] = archiveFile{mode: sIFREG | perm, data: data}
}

func (a *archive) addSymlink(p, target string) {
	p = strings.Trim(path.Clean(p), "/")
	a.addDir(path.Dir(p))
	a.files[p] = archiveFile{mode: sIFLNK | 0o777, data: []byte(target)}
}

// writeTo writes the archive as newc cpio: directories first (parents before children),
// then files, then the trailer. Every entry is owned by root; mtimes are zero so the same
// inputs give the same bytes.
func (a *archive) writeTo(w io.Writer) error {
	dirs := make([]string, 0, len(a.dirs))
	for d := range a.dirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs) // "a" sorts before "a/b"
	files := make([]string, 0, len(a.files))
	for f := range a.files {
		files = append(files, f)
	}
	sort.Strings(files)
	ino := uint32(1)
	for _, d := range dirs {
		if err := writeEntry(w, ino, d, sIFDIR|0o755, 2, nil); err != nil {
			return err
		}
		ino++
	}
	for _, f := range files {
		e := a.files[f]
		if err := writeEntry(w, ino, f, e.mode, 1, e.data); err != nil {
			return err
		}
		ino++
	}
	return writeEntry(w, 0, "TRAILER!!!", 0, 1, nil)
}

func writeEntry(w io.Writer, ino uint32, name string, mode, nlink uint32, data []byte) error {
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+8+len(data))
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	_, err := w.Write(buf)
	return err
}

// pad4 pads b with zeros to a multiple of four bytes. The newc header is 110 bytes, so
// padding the running entry pads the stream (every entry starts aligned).
func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
