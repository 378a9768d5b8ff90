package admin

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestStatusPage: the page and its files are served without a token (also when the API
// has one), with a policy that forbids loading anything from elsewhere; every file the
// page names exists; unknown paths stay 404 and the page takes no writes.
func TestStatusPage(t *testing.T) {
	for _, tok := range []string{"", token} {
		node := &recNode{ready: true}
		srv := httptest.NewServer(New(slog.New(slog.DiscardHandler), node, tok, prometheus.NewRegistry()))
		get := func(path string) (*http.Response, string) {
			t.Helper()
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp, string(b)
		}
		resp, page := get("/")
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("token %q: GET /: %d %s", tok, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET /: Content-Security-Policy %q", csp)
		}
		refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
		if len(refs) < 3 {
			t.Fatalf("page references %v, want the icon, the style sheet and the script", refs)
		}
		for _, m := range refs {
			ref := m[1]
			if strings.HasPrefix(ref, "data:") {
				continue
			}
			if strings.Contains(ref, "//") {
				t.Errorf("page loads %s from elsewhere", ref)
				continue
			}
			resp, body := get("/" + ref)
			if resp.StatusCode != 200 || len(body) == 0 {
				t.Errorf("GET /%s: %d (%d bytes)", ref, resp.StatusCode, len(body))
			}
			want := map[bool]string{true: "text/javascript", false: "text/css"}[strings.HasSuffix(ref, ".js")]
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, want) {
				t.Errorf("GET /%s: Content-Type %q, want %s", ref, ct, want)
			}
		}
		if resp, _ := get("/v1/version"); resp.StatusCode != 200 {
			t.Errorf("GET /v1/version: %d", resp.StatusCode)
		}
		if resp, _ := get("/nothing-here"); resp.StatusCode != 404 {
			t.Errorf("GET /nothing-here: %d, want 404", resp.StatusCode)
		}
		resp, err := http.Post(srv.URL+"/", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST /: %d, want 405", resp.StatusCode)
		}
		srv.Close()
		if len(node.calls) != 0 {
			t.Errorf("the page's requests reached the node's mutations: %v", node.calls)
		}
	}
}

// TestStatusPageReadsOnly: the script calls only GET endpoints, and only its own.
func TestStatusPageReadsOnly(t *testing.T) {
	js, err := ui.ReadFile("ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	calls := regexp.MustCompile(`fetch\(([^)]*)\)`).FindAllStringSubmatch(string(js), -1)
	if len(calls) == 0 {
		t.Fatal("app.js fetches nothing")
	}
	for _, c := range calls {
		if !regexp.MustCompile(`^"v1/(state|version|monitor/recent)", \{ cache: "no-store" \}$`).MatchString(c[1]) {
			t.Errorf("app.js calls fetch(%s): want only GET v1/state, v1/version and v1/monitor/recent", c[1])
		}
	}
}
