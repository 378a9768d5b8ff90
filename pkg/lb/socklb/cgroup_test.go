package socklb

import (
	"errors"
	"strings"
	"testing"
)

func TestCgroup2Mount(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            error
	}{
		{name: "root hierarchy", in: `22 1 0:21 / /proc rw,nosuid - proc proc rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
`, want: "/sys/fs/cgroup"},
		{name: "elsewhere with a space", in: `30 25 0:26 / /run/my\040cg rw - cgroup2 none rw
`, want: "/run/my cg"},
		{name: "sub-tree first, root later", in: `30 25 0:26 /a/b /mnt/sub rw - cgroup2 none rw
31 25 0:26 / /mnt/root rw shared:5 - cgroup2 none rw
`, want: "/mnt/root"},
		{name: "only a sub-tree", in: `30 25 0:26 /a/b /mnt/sub rw - cgroup2 none rw
`, want: "/mnt/sub"},
		{name: "cgroup v1 only", in: `30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
`, err: ErrNoCgroup2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cgroup2Mount(strings.NewReader(tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
