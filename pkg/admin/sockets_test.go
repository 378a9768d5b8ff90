package admin

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

type socketsNode struct{ recNode }

func (socketsNode) Sockets() any {
	return map[string]any{"enabled": true, "vips": []map[string]any{{"name": "web", "top_clients": []map[string]any{{"pid": 42, "comm": "curl"}}}}}
}

func TestSockets(t *testing.T) {
	for _, tc := range []struct {
		name     string
		node     Node
		wantCode int
		wantBody string
	}{
		{"node with socket lb", &socketsNode{}, 200, `"comm": "curl"`},
		{"node without", &recNode{}, 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(New(slog.New(slog.DiscardHandler), tc.node, "", prometheus.NewRegistry()))
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL + "/v1/sockets")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode || !strings.Contains(string(body), tc.wantBody) {
				t.Fatalf("GET /v1/sockets: %d %s, want %d with %q", resp.StatusCode, body, tc.wantCode, tc.wantBody)
			}
		})
	}
}
