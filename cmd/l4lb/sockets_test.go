package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const socketsDoc = `{"enabled": true, "cgroup": "/sys/fs/cgroup", "sample_every": 1,
 "vips": [{"name": "web", "key": "203.0.113.10:80/tcp", "counters": {"connects": 7, "sendmsgs": 0, "no_backend": 1},
   "top_clients": [{"comm": "curl", "cgroup_id": 99, "last_pid": 4242, "pids": 3, "sampled_connects": 5}], "other_sampled_connects": 2}],
 "cgroups": {"99": "/apps/web.service"}}`

const socketState = `{"mode": "socket", "interfaces": {}, "ready": true, "last_apply": {"at": "2025-06-01T10:00:00Z"},
 "vips": [{"name": "web", "key": "203.0.113.10:80/tcp", "up": true, "backends": [], "socket": {"connects": 7, "sendmsgs": 3, "no_backend": 0}}],
 "counters": {}, "socket_lb": {"cgroup": "/sys/fs/cgroup", "attached": true, "sampled_connects": 7}}`

func TestSocketsCommand(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/sockets", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(socketsDoc)) })
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(socketState)) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	out, err := run("sockets", "--admin", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"socket lb on cgroup /sys/fs/cgroup, sampling 1 connect in 1",
		"203.0.113.10:80/tcp  web   7", "web                curl", "/apps/web.service", "(others)"} {
		if !strings.Contains(out, want) {
			t.Errorf("l4lb sockets lacks %q:\n%s", want, out)
		}
	}
	out, err = run("sockets", "--admin", addr, "-o", "yaml")
	if err != nil || !strings.Contains(out, "comm: curl") {
		t.Errorf("l4lb sockets -o yaml: %v\n%s", err, out)
	}
	out, err = run("status", "--admin", addr)
	if err != nil || !strings.Contains(out, "socket lb attached to cgroup /sys/fs/cgroup, 7 connects sampled") ||
		!strings.Contains(out, "SOCKET CONNECTS") {
		t.Errorf("l4lb status: %v\n%s", err, out)
	}
}
