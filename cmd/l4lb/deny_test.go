package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deny add sends force only with --force, and a refusal (409) is an error that names what
// the prefix covers.
func TestDenyAddForce(t *testing.T) {
	const refusal = `{"error": "conflict: 198.51.100.0/24 covers backend 198.51.100.11 (vip web): the prefilter would drop their packets; nothing was added (force it with l4lb deny add --force, or \"force\": true)"}`
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		b, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/deny" || json.Unmarshal(b, &body) != nil {
			w.WriteHeader(400)
			return
		}
		bodies = append(bodies, body)
		if body["force"] != true {
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(refusal))
			return
		}
		w.Write([]byte(`{"status": "ok"}`))
	}))
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")

	_, err := run("deny", "add", "198.51.100.0/24", "--admin", addr, "--token-file", tok)
	if err == nil || !strings.Contains(err.Error(), "covers backend 198.51.100.11 (vip web)") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("deny add of a prefix covering a backend: %v, want the refusal naming the backend", err)
	}
	out, err := run("deny", "add", "--force", "198.51.100.0/24", "--admin", addr, "--token-file", tok)
	if err != nil || out != "ok (1 prefixes)\n" {
		t.Errorf("deny add --force: %q, %v", out, err)
	}
	if len(bodies) != 2 || len(bodies[0]) != 1 || bodies[1]["force"] != true {
		t.Errorf("bodies sent: %v; want prefixes only, then with force", bodies)
	}
	if _, err := run("deny", "del", "--force", "198.51.100.0/24", "--admin", addr, "--token-file", tok); err == nil || !strings.Contains(err.Error(), "unknown flag: --force") {
		t.Errorf("deny del --force: %v, want an unknown flag", err)
	}
}
