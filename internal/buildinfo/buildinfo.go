// Package buildinfo says which l4lb binary this is: its version, the commit it was built
// from and the Go toolchain, as stamped by `go build` or overridden by a packager.
//
// The Go toolchain records the main module's version (a tag or a pseudo-version such as
// v0.0.0-20250601100000-0123456789ab+dirty) and, when it builds inside a git checkout, the
// commit, its time and whether the tree had uncommitted changes. It records no commit in
// a linked git worktree (golang/go#58218) or with -buildvcs=false; a packager, or a
// Makefile, can then set them at link time:
//
//	go build -ldflags "-X github.com/l4lb/l4lb/internal/buildinfo.version=1.2.3 \
//	  -X github.com/l4lb/l4lb/internal/buildinfo.revision=$(git rev-parse HEAD)" ./cmd/l4lb
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// Set at link time with -ldflags -X; they win over what the toolchain recorded.
var (
	version  string // e.g. 1.2.3 or 1.2.3-1 (a Debian revision)
	revision string // the full commit hash
)

// Info describes a build. Fields the build did not record are empty.
type Info struct {
	// Version is the packager's version, else the module version, else "dev".
	Version string `json:"version"`
	// Revision is the commit the binary was built from.
	Revision string `json:"revision,omitempty"`
	// Time is the commit's time.
	Time time.Time `json:"time,omitzero"`
	// Modified: the working tree had uncommitted changes.
	Modified bool `json:"modified,omitempty"`
	// GoVersion is the toolchain that built the binary.
	GoVersion string `json:"go"`
}

// Get returns this binary's build information.
func Get() Info { return get() }

var get = sync.OnceValue(func() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return fromBuildInfo(bi, version, revision)
})

// fromBuildInfo is Get without the process: bi may be nil (no build information), and
// overrides replace what bi says when not empty.
func fromBuildInfo(bi *debug.BuildInfo, versionOverride, revisionOverride string) Info {
	i := Info{Version: "dev", GoVersion: runtime.Version()}
	if bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			i.Version = v
		}
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				i.Revision = s.Value
			case "vcs.time":
				i.Time, _ = time.Parse(time.RFC3339, s.Value)
			case "vcs.modified":
				i.Modified = s.Value == "true"
			}
		}
	}
	if versionOverride != "" {
		i.Version = versionOverride
	}
	if revisionOverride != "" && revisionOverride != i.Revision {
		// The recorded time and state belong to another commit.
		i.Revision, i.Time, i.Modified = revisionOverride, time.Time{}, false
	}
	return i
}

// String is the one-line form l4lb version prints:
// "v1.2.3 (commit 0123456789ab, 2025-06-01T10:00:00Z, modified, go1.26.8)".
func (i Info) String() string {
	var parts []string
	if i.Revision != "" {
		parts = append(parts, "commit "+short(i.Revision))
	}
	if !i.Time.IsZero() {
		parts = append(parts, i.Time.UTC().Format(time.RFC3339))
	}
	if i.Modified {
		parts = append(parts, "modified")
	}
	parts = append(parts, i.GoVersion)
	return fmt.Sprintf("%s (%s)", i.Version, strings.Join(parts, ", "))
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
