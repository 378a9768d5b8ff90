package buildinfo

import (
	"encoding/json"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFromBuildInfo(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "-buildmode", Value: "exe"}, {Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: "2025-06-01T10:00:00Z"}, {Key: "vcs.modified", Value: modified}}
	}
	main := func(v string, s []debug.BuildSetting) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/l4lb/l4lb", Version: v}, Settings: s}
	}
	for _, tc := range []struct {
		name       string
		bi         *debug.BuildInfo
		ver, rev   string
		want       Info
		wantString string
	}{
		{name: "no build information", bi: nil,
			want: Info{Version: "dev", GoVersion: runtime.Version()}, wantString: "dev (" + runtime.Version() + ")"},
		{name: "go run or a test: devel, no vcs", bi: main("(devel)", nil),
			want: Info{Version: "dev", GoVersion: "go1.26.8"}, wantString: "dev (go1.26.8)"},
		{name: "tagged release", bi: main("v1.2.3", vcs("false")),
			want:       Info{Version: "v1.2.3", Revision: rev, Time: at, GoVersion: "go1.26.8"},
			wantString: "v1.2.3 (commit 0123456789ab, 2025-06-01T10:00:00Z, go1.26.8)"},
		{name: "untagged dirty checkout", bi: main("v0.0.0-20250601100000-0123456789ab+dirty", vcs("true")),
			want:       Info{Version: "v0.0.0-20250601100000-0123456789ab+dirty", Revision: rev, Time: at, Modified: true, GoVersion: "go1.26.8"},
			wantString: "v0.0.0-20250601100000-0123456789ab+dirty (commit 0123456789ab, 2025-06-01T10:00:00Z, modified, go1.26.8)"},
		{name: "devel with vcs", bi: main("(devel)", vcs("false")),
			want: Info{Version: "dev", Revision: rev, Time: at, GoVersion: "go1.26.8"}, wantString: "dev (commit 0123456789ab, 2025-06-01T10:00:00Z, go1.26.8)"},
		{name: "packager's version wins", bi: main("v1.2.3", vcs("false")), ver: "1.2.3-1",
			want: Info{Version: "1.2.3-1", Revision: rev, Time: at, GoVersion: "go1.26.8"}, wantString: "1.2.3-1 (commit 0123456789ab, 2025-06-01T10:00:00Z, go1.26.8)"},
		{name: "packager's revision in a worktree (no vcs)", bi: main("(devel)", nil), ver: "1.2.3", rev: "fedcba9876543210",
			want: Info{Version: "1.2.3", Revision: "fedcba9876543210", GoVersion: "go1.26.8"}, wantString: "1.2.3 (commit fedcba987654, go1.26.8)"},
		{name: "packager's revision differs from the recorded one", bi: main("v1.2.3", vcs("true")), rev: "fedcba9876543210",
			want: Info{Version: "v1.2.3", Revision: "fedcba9876543210", GoVersion: "go1.26.8"}, wantString: "v1.2.3 (commit fedcba987654, go1.26.8)"},
		{name: "packager's revision equals the recorded one", bi: main("v1.2.3", vcs("true")), rev: rev,
			want:       Info{Version: "v1.2.3", Revision: rev, Time: at, Modified: true, GoVersion: "go1.26.8"},
			wantString: "v1.2.3 (commit 0123456789ab, 2025-06-01T10:00:00Z, modified, go1.26.8)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fromBuildInfo(tc.bi, tc.ver, tc.rev)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Info (-want +got):\n%s", diff)
			}
			if s := got.String(); s != tc.wantString {
				t.Errorf("String() = %q, want %q", s, tc.wantString)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	b, err := json.Marshal(Info{Version: "dev", GoVersion: "go1.26.8"})
	if err != nil || string(b) != `{"version":"dev","go":"go1.26.8"}` {
		t.Errorf("unstamped: %s, %v", b, err)
	}
	b, _ = json.Marshal(Info{Version: "v1", Revision: "abc", Time: time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), Modified: true, GoVersion: "go1.26.8"})
	if string(b) != `{"version":"v1","revision":"abc","time":"2025-06-01T10:00:00Z","modified":true,"go":"go1.26.8"}` {
		t.Errorf("stamped: %s", b)
	}
}

func TestGet(t *testing.T) {
	// A test binary records no version: Get falls back to dev and the running toolchain.
	if i := Get(); i.Version == "" || i.GoVersion == "" {
		t.Errorf("Get() = %+v", i)
	}
}
