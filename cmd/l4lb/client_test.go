package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	yaml "go.yaml.in/yaml/v3"
)

// state is a /v1/state answer, with a counter beyond float64's exact range.
const state = `{
  "mode": "xdp",
  "mode_reason": "auto: the xdp program loads on this kernel",
  "interfaces": {"eth0": "native"},
  "next_hop": "02:00:00:00:00:01",
  "ready": true,
  "last_apply": {"at": "2025-06-01T10:00:00Z", "duration_ms": 1.5},
  "vips": [
    {"name": "web", "key": "203.0.113.10:80/tcp", "up": true, "packets": 18446744073709551615, "bytes": 0, "new_flows": 3,
     "backends": [{"address": "198.51.100.11", "id": 1, "weight": 1, "config_weight": 1, "healthy": true, "drained": false, "packets": 5, "bytes": 300,
       "check": {"type": "http", "via": "tunnel", "target": "203.0.113.10:80", "last_at": "2025-06-01T10:00:00Z", "last_rtt_seconds": 0.00042,
                 "last_error": "unhealthy: GET /: status 503, want 200", "last_error_at": "2025-06-01T09:59:00Z"}}]},
    {"name": "yes", "key": "203.0.113.10:53/udp", "up": false, "packets": 0, "bytes": 0, "new_flows": 0, "backends": []}
  ],
  "counters": {}
}
`

// fakeAdmin answers /v1/state and the mutations like the daemon's admin API.
func fakeAdmin(t *testing.T) (addr, tokenFile string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(state)) })
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(401)
			w.Write([]byte(`{"error": "missing or wrong bearer token"}`))
			return
		}
		w.Write([]byte("{\n  \"status\": \"ok\"\n}\n"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "http://"), tokenFile
}

func TestClientOutput(t *testing.T) {
	addr, tok := fakeAdmin(t)
	var want any
	if err := json.Unmarshal([]byte(state), &want); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"status", "vips", "backends", "bgp"} {
		t.Run(cmd+" json", func(t *testing.T) {
			out, err := run(cmd, "--admin", addr, "-o", "json")
			var got any
			if err != nil || json.Unmarshal([]byte(out), &got) != nil {
				t.Fatalf("%s -o json: %v\n%s", cmd, err, out)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("json (-want +got):\n%s", diff)
			}
		})
		t.Run(cmd+" yaml", func(t *testing.T) {
			out, err := run(cmd, "--admin", addr, "-o", "yaml")
			if err != nil {
				t.Fatalf("%s -o yaml: %v\n%s", cmd, err, out)
			}
			var got any
			if err := yaml.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("not yaml: %v\n%s", err, out)
			}
			// The same document as the JSON (numbers compared as text: YAML keeps the
			// uint64 exact, JSON into any would not).
			if diff := cmp.Diff(normalize(want), normalize(got)); diff != "" {
				t.Errorf("yaml (-json +yaml):\n%s", diff)
			}
			for _, line := range []string{"mode: xdp\n", "    packets: 18446744073709551615\n", "  - name: \"yes\"\n", "    backends: []\n", "counters: {}\n"} {
				if !strings.Contains(out, line) {
					t.Errorf("yaml lacks %q:\n%s", line, out)
				}
			}
			if strings.Index(out, "mode:") > strings.Index(out, "vips:") {
				t.Errorf("keys not in the API's order:\n%s", out)
			}
		})
	}
	t.Run("table", func(t *testing.T) {
		out, err := run("vips", "--admin", addr)
		if err != nil || !strings.Contains(out, "VIP") || !strings.Contains(out, "203.0.113.10:80/tcp") {
			t.Errorf("vips: %v\n%s", err, out)
		}
	})
	t.Run("backends table", func(t *testing.T) {
		out, err := run("backends", "--admin", addr)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"CHECK", "RTT", "LAST ERROR", "http tunnel", "420µs", "unhealthy: GET /: status 503, want 200 ("} {
			if !strings.Contains(out, want) {
				t.Errorf("backends lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("mutation", func(t *testing.T) {
		for format, want := range map[string]string{"table": "ok\n", "json": "{\n  \"status\": \"ok\"\n}\n", "yaml": "status: ok\n"} {
			out, err := run("reload", "--admin", addr, "--token-file", tok, "-o", format)
			if err != nil || out != want {
				t.Errorf("reload -o %s: %q, %v; want %q", format, out, err, want)
			}
		}
	})
}

// normalize turns every number into its text, so that JSON's float64 and YAML's ints and
// uint64s compare.
func normalize(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = normalize(e)
		}
		return out
	case float64, int, uint64, int64:
		b, _ := json.Marshal(v)
		var f float64
		json.Unmarshal(b, &f)
		return f
	}
	return v
}

func TestUnknownOutputFormat(t *testing.T) {
	// Rejected before the API is contacted: the address is never dialled.
	for _, args := range [][]string{{"status", "-o", "yml"}, {"vips", "-o", "xml"}, {"reload", "-o", "text"}, {"version", "-o", "toml"}, {"-o", "csv", "backends"}} {
		out, err := run(append(args, "--admin", "192.0.2.1:9")...)
		if err == nil || !strings.Contains(err.Error(), "unknown output format, want table, json, yaml") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

func TestJSONToYAML(t *testing.T) {
	for in, want := range map[string]string{
		`{"b": 1, "a": [true, null, "x"], "c": {}, "d": "123", "e": 1.5e3, "f": ""}`: "b: 1\na:\n  - true\n  - null\n  - x\nc: {}\nd: \"123\"\ne: 1.5e3\nf: \"\"\n",
		`[]`:   "[]\n",
		`"on"`: "\"on\"\n",
		`["y", "No", "12:30", "02:00:00:00:00:01", "yesterday"]`: "- \"y\"\n- \"No\"\n- \"12:30\"\n- 02:00:00:00:00:01\n- yesterday\n",
	} {
		got, err := jsonToYAML([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("jsonToYAML(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`{"a": 1}{"b": 2}`, `{"a": `, ``} {
		if _, err := jsonToYAML([]byte(in)); err == nil {
			t.Errorf("jsonToYAML(%s): no error", in)
		}
	}
}

// drain, undrain and weight answered 202 (saved, not yet in the data plane) exit non-zero
// and say "pending" with what the API said; answered 200, they print ok.
func TestMutationPending(t *testing.T) {
	const pending = `{"status": "pending", "error": "pending: saved, but not applied within 5s (see last_apply in l4lb status); it is retried"}`
	code := http.StatusAccepted
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(401)
			return
		}
		w.WriteHeader(code)
		if code == http.StatusAccepted {
			w.Write([]byte(pending))
			return
		}
		w.Write([]byte(`{"status": "ok"}`))
	}
	mux.HandleFunc("POST /v1/vips/web/backends/198.51.100.11/drain", answer)
	mux.HandleFunc("POST /v1/vips/web/backends/198.51.100.11/undrain", answer)
	mux.HandleFunc("PUT /v1/vips/web/backends/198.51.100.11/weight", answer)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, args := range [][]string{{"drain", "web", "198.51.100.11"}, {"undrain", "web", "198.51.100.11"}, {"weight", "web", "198.51.100.11", "3"}} {
		for _, format := range []string{"table", "json"} {
			code = http.StatusAccepted
			out, err := run(append(args, "--admin", addr, "--token-file", tok, "-o", format)...)
			const want = "pending: the admin api answered 202 Accepted: saved, but not applied within 5s (see last_apply in l4lb status); it is retried"
			if err == nil || err.Error() != want || strings.Contains(out, "ok") {
				t.Errorf("%v -o %s answered 202: %q, error %v; want error %q and no ok", args, format, out, err, want)
			}
			code = http.StatusOK
			if out, err := run(append(args, "--admin", addr, "--token-file", tok)...); err != nil || out != "ok\n" {
				t.Errorf("%v answered 200: %q, %v", args, out, err)
			}
		}
	}
}
