package admin

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// denyNode is a recNode with a deny list.
type denyNode struct {
	recNode
	list []netip.Prefix
}

func (n *denyNode) DenyAdd(ps []netip.Prefix, opts DenyOptions) error {
	n.calls = append(n.calls, fmt.Sprintf("deny add %v force %v client %v", ps, opts.Force, opts.Client))
	if n.fail == nil {
		n.list = append(n.list, ps...)
	}
	return n.fail
}

func (n *denyNode) DenyDelete(ps []netip.Prefix) error {
	n.calls = append(n.calls, fmt.Sprint("deny del ", ps))
	return n.fail
}

func (n *denyNode) DenyList() (any, error) { return append([]netip.Prefix{}, n.list...), nil }

func TestDenyAPI(t *testing.T) {
	cases := []struct {
		name, method, body, auth string
		fail                     error
		wantCode                 int
		wantCalls                []string
		wantIn                   string
	}{
		{name: "add", method: "POST", body: `{"prefixes": ["198.51.100.0/28", "2001:db8::1"]}`, auth: "Bearer " + token, wantCode: 200,
			wantCalls: []string{"deny add [198.51.100.0/28 2001:db8::1/128] force false client 127.0.0.1"}},
		{name: "add forced", method: "POST", body: `{"prefixes": ["198.51.100.0/28"], "force": true}`, auth: "Bearer " + token, wantCode: 200,
			wantCalls: []string{"deny add [198.51.100.0/28] force true client 127.0.0.1"}},
		{name: "add that covers a peer: 409", method: "POST", body: `{"prefixes": ["192.0.2.0/24"]}`, auth: "Bearer " + token,
			fail: fmt.Errorf("%w: 192.0.2.0/24 covers bgp peer 192.0.2.1", ErrConflict), wantCode: 409,
			wantCalls: []string{"deny add [192.0.2.0/24] force false client 127.0.0.1"}, wantIn: "covers bgp peer 192.0.2.1"},
		{name: "del takes no force", method: "DELETE", body: `{"prefixes": ["198.51.100.0/28"], "force": true}`, auth: "Bearer " + token, wantCode: 400},
		{name: "del", method: "DELETE", body: `{"prefixes": ["198.51.100.0/28"]}`, auth: "Bearer " + token, wantCode: 200,
			wantCalls: []string{"deny del [198.51.100.0/28]"}},
		{name: "list is read-only", method: "GET", wantCode: 200, wantIn: "[]"},
		{name: "no token", method: "POST", body: `{"prefixes": ["198.51.100.0/28"]}`, wantCode: 401},
		{name: "host bits set: nothing applied", method: "POST", body: `{"prefixes": ["198.51.100.0/28", "198.51.100.1/24"]}`, auth: "Bearer " + token,
			wantCode: 400, wantIn: "host bits"},
		{name: "not a prefix: nothing applied", method: "POST", body: `{"prefixes": ["198.51.100.0/28", "banana"]}`, auth: "Bearer " + token,
			wantCode: 400, wantIn: `\"banana\" is not a prefix`},
		{name: "empty list", method: "POST", body: `{"prefixes": []}`, auth: "Bearer " + token, wantCode: 400, wantIn: "no prefixes"},
		{name: "unknown field", method: "POST", body: `{"prefix": ["198.51.100.0/28"]}`, auth: "Bearer " + token, wantCode: 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := &denyNode{recNode: recNode{fail: c.fail}}
			srv := httptest.NewServer(New(slog.New(slog.NewTextHandler(io.Discard, nil)), n, token, prometheus.NewRegistry()))
			defer srv.Close()
			req, _ := http.NewRequest(c.method, srv.URL+"/v1/deny", strings.NewReader(c.body))
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.wantCode {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, c.wantCode, body)
			}
			if diff := cmp.Diff(c.wantCalls, n.calls); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			if c.wantIn != "" && !strings.Contains(string(body), c.wantIn) {
				t.Errorf("body %s does not contain %q", body, c.wantIn)
			}
		})
	}
}

func TestDenyRoutesOnlyWithADenyNode(t *testing.T) {
	srv := httptest.NewServer(New(slog.New(slog.NewTextHandler(io.Discard, nil)), &recNode{}, token, prometheus.NewRegistry()))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/deny")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /v1/deny on a node without a deny list: %d, want 404", resp.StatusCode)
	}
}
