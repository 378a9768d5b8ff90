package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// recNode records the mutations that reach it. The daemon behind the real API is tested
// end to end in pkg/daemon; this table is about the HTTP contract: auth, input checks, and
// that a rejected request never reaches the node.
type recNode struct {
	ready bool
	calls []string
	fail  error
}

func (n *recNode) State() any  { return map[string]any{"mode": "xdp"} }
func (n *recNode) Ready() bool { return n.ready }
func (n *recNode) SetDrain(vip, backend string, drain bool) error {
	n.calls = append(n.calls, fmt.Sprintf("drain %s %s %v", vip, backend, drain))
	return n.fail
}
func (n *recNode) SetWeight(vip, backend string, w *uint32) error {
	s := "nil"
	if w != nil {
		s = fmt.Sprint(*w)
	}
	n.calls = append(n.calls, fmt.Sprintf("weight %s %s %s", vip, backend, s))
	return n.fail
}
func (n *recNode) Reload() error {
	n.calls = append(n.calls, "reload")
	return n.fail
}

const token = "s3cret"

func TestAPI(t *testing.T) {
	auth := "Bearer " + token
	cases := []struct {
		name       string
		readOnly   bool
		ready      bool
		fail       error
		method     string
		path       string
		auth       string
		body       string
		wantCode   int
		wantCall   string // "" : the node must not be called
		wantInBody string
	}{
		{name: "healthz", method: "GET", path: "/healthz", wantCode: 200, wantInBody: `"ok"`},
		{name: "readyz before the first apply", method: "GET", path: "/readyz", wantCode: 503, wantInBody: "not ready"},
		{name: "readyz after", ready: true, method: "GET", path: "/readyz", wantCode: 200},
		{name: "metrics", method: "GET", path: "/metrics", wantCode: 200, wantInBody: "l4lb_test_total 3"},
		{name: "state needs no token", method: "GET", path: "/v1/state", wantCode: 200, wantInBody: `"mode": "xdp"`},
		{name: "drain", method: "POST", path: "/v1/vips/web/backends/198.51.100.11/drain", auth: auth, wantCode: 200, wantCall: "drain web 198.51.100.11 true"},
		{name: "undrain by key", method: "POST", path: "/v1/vips/203.0.113.10:80%2Ftcp/backends/198.51.100.11/undrain", auth: auth, wantCode: 200, wantCall: "drain 203.0.113.10:80/tcp 198.51.100.11 false"},
		{name: "drain without a token", method: "POST", path: "/v1/vips/web/backends/198.51.100.11/drain", wantCode: 401},
		{name: "drain with a wrong token", method: "POST", path: "/v1/vips/web/backends/198.51.100.11/drain", auth: "Bearer nope", wantCode: 401},
		{name: "drain with a basic auth header", method: "POST", path: "/v1/vips/web/backends/198.51.100.11/drain", auth: "Basic " + token, wantCode: 401},
		{name: "read-only api refuses changes", readOnly: true, method: "POST", path: "/v1/reload", auth: auth, wantCode: 403, wantInBody: "read-only"},
		{name: "drain of an unknown backend", fail: fmt.Errorf("%w: no vip \"nope\"", ErrNotFound), method: "POST", path: "/v1/vips/nope/backends/198.51.100.11/drain", auth: auth, wantCode: 404, wantCall: "drain nope 198.51.100.11 true", wantInBody: "no vip"},
		{name: "drain by GET", method: "GET", path: "/v1/vips/web/backends/198.51.100.11/drain", auth: auth, wantCode: 405},
		{name: "weight", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": 5}`, wantCode: 200, wantCall: "weight web 198.51.100.11 5"},
		{name: "weight back to the config", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": null}`, wantCode: 200, wantCall: "weight web 198.51.100.11 nil"},
		{name: "weight 0 drains", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": 0}`, wantCode: 200, wantCall: "weight web 198.51.100.11 0"},
		{name: "weight negative", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": -1}`, wantCode: 400, wantInBody: "0 to 65536"},
		{name: "weight too big", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": 65537}`, wantCode: 400},
		{name: "weight not json", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `five`, wantCode: 400, wantInBody: "want {"},
		{name: "weight as a string", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": "5"}`, wantCode: 400},
		{name: "weight with an unknown field", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": 5, "wieght": 6}`, wantCode: 400},
		{name: "weight with a second object after it", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight":2}{"weight":900000}`, wantCode: 400, wantInBody: "after the object"},
		{name: "weight with trailing garbage", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": 2} x`, wantCode: 400},
		{name: "weight with trailing whitespace", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: "{\"weight\": 2}\n \t", wantCode: 200, wantCall: "weight web 198.51.100.11 2"},
		{name: "weight as a list", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `[{"weight": 2}]`, wantCode: 400},
		{name: "weight without a body", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, wantCode: 400, wantInBody: "want {"},
		{name: "weight null body", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `null`, wantCode: 400},
		{name: "weight without the weight key", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{}`, wantCode: 400},
		{name: "weight given twice", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": 900000, "weight": 2}`, wantCode: 400, wantInBody: "twice"},
		{name: "weight as a fraction", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": 2.5}`, wantCode: 400},
		{name: "drain with a body", method: "POST", path: "/v1/vips/web/backends/198.51.100.11/drain", auth: auth, body: `{"drain": false}`, wantCode: 400, wantInBody: "no body"},
		{name: "reload with a body", method: "POST", path: "/v1/reload", auth: auth, body: `x`, wantCode: 400},
		{name: "reload with an empty object", method: "POST", path: "/v1/reload", auth: auth, body: ` {} `, wantCode: 200, wantCall: "reload"},
		{name: "undrain with two empty objects", method: "POST", path: "/v1/vips/web/backends/198.51.100.11/undrain", auth: auth, body: `{}{}`, wantCode: 400},
		{name: "weight without a token", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", body: `{"weight": 5}`, wantCode: 401},
		{name: "weight with an oversized body", method: "PUT", path: "/v1/vips/web/backends/198.51.100.11/weight", auth: auth, body: `{"weight": 5` + strings.Repeat(" ", 5000) + `}`, wantCode: 400},
		{name: "reload", method: "POST", path: "/v1/reload", auth: auth, wantCode: 200, wantCall: "reload"},
		{name: "rejected reload", fail: errors.New("l4lb.yaml:3: vips[0].port: 70000: want 0 to 65535"), method: "POST", path: "/v1/reload", auth: auth, wantCode: 422, wantCall: "reload", wantInBody: "vips[0].port"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "l4lb_test_total"})
			reg.MustRegister(c)
			c.Add(3)
			node := &recNode{ready: tc.ready, fail: tc.fail}
			tok := token
			if tc.readOnly {
				tok = ""
			}
			srv := httptest.NewServer(New(slog.New(slog.NewTextHandler(io.Discard, nil)), node, tok, reg))
			defer srv.Close()

			req, err := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantCode {
				t.Errorf("status %d, want %d; body %s", resp.StatusCode, tc.wantCode, body)
			}
			if tc.wantInBody != "" && !strings.Contains(string(body), tc.wantInBody) {
				t.Errorf("body %s does not contain %q", body, tc.wantInBody)
			}
			var want []string
			if tc.wantCall != "" {
				want = []string{tc.wantCall}
			}
			if fmt.Sprint(node.calls) != fmt.Sprint(want) {
				t.Errorf("node calls %q, want %q", node.calls, want)
			}
			if resp.StatusCode >= 400 && resp.StatusCode != 405 && !strings.HasPrefix(tc.path, "/readyz") {
				var e struct{ Error string }
				if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
					t.Errorf("an error response is not JSON with an error field: %s", body)
				}
			}
		})
	}
}

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if tok, err := ReadToken(write("good", " s3cret\n", 0o600)); err != nil || tok != "s3cret" {
		t.Errorf("good file: %q, %v", tok, err)
	}
	if tok, err := ReadToken(write("owner-only", "s3cret", 0o400)); err != nil || tok != "s3cret" {
		t.Errorf("read-only for the owner: %q, %v", tok, err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		want string
	}{
		{0o644, "is group-readable and world-readable (mode -rw-r--r--)"},
		{0o604, "is world-readable (mode -rw----r--)"},
		{0o640, "is group-readable (mode -rw-r-----)"},
		{0o620, "is group-writable (mode -rw--w----)"},
		{0o602, "is world-writable (mode -rw-----w-)"},
		{0o610, "is executable by its group (mode -rw---x---)"},
		{0o666, "is group-readable, group-writable, world-readable and world-writable (mode -rw-rw-rw-)"},
	} {
		p := write(fmt.Sprintf("mode%o", tc.mode), "s3cret", tc.mode)
		_, err := ReadToken(p)
		if err == nil || !strings.Contains(err.Error(), p+" "+tc.want) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %o: error %v, want it to say %q and chmod 600", tc.mode, err, p+" "+tc.want)
		}
	}
	if _, err := ReadToken(write("huge", strings.Repeat("a", 5000), 0o600)); err == nil || !strings.Contains(err.Error(), "longer than 4096 bytes") {
		t.Errorf("a 5000-byte file: %v", err)
	}
	if _, err := ReadToken(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	// Owned by another user (not root): that user could replace the token.
	other := write("other", "s3cret", 0o600)
	if err := os.Chown(other, 4242, 4242); err != nil {
		t.Logf("skip the owner check: chown needs root: %v", err)
	} else if _, err := ReadToken(other); err == nil || !strings.Contains(err.Error(), other+" is owned by uid 4242") {
		t.Errorf("owned by uid 4242: %v", err)
	}
	if _, err := ReadToken(write("empty", " \n", 0o600)); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: %v", err)
	}
	if _, err := ReadToken(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}
