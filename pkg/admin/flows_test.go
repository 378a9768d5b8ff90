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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l4lb/l4lb/pkg/lb"
)

// flowsNode records the lookups that reach it.
type flowsNode struct {
	recNode
	queries []string
	err     error
}

func (n *flowsNode) FlowSummary() (any, error) {
	n.queries = append(n.queries, "summary")
	return map[string]any{"entries": 3}, n.err
}

func (n *flowsNode) FlowLookup(q FlowQuery) (any, error) {
	n.queries = append(n.queries, q.String())
	return map[string]any{"tracked": true}, n.err
}

func TestParseFlow(t *testing.T) {
	for _, c := range []struct {
		proto, src, dst string
		want            FlowQuery
		wantErr         string // names the parameter
	}{
		{"tcp", "198.51.100.7:40000", "203.0.113.10:80", FlowQuery{lb.ProtoTCP, netip.MustParseAddrPort("198.51.100.7:40000"), netip.MustParseAddrPort("203.0.113.10:80")}, ""},
		{"UDP", "[2001:db8::7]:53000", "[2001:db8::10]:53", FlowQuery{lb.ProtoUDP, netip.MustParseAddrPort("[2001:db8::7]:53000"), netip.MustParseAddrPort("[2001:db8::10]:53")}, ""},
		{"tcp", "[::ffff:198.51.100.7]:40000", "203.0.113.10:80", FlowQuery{lb.ProtoTCP, netip.MustParseAddrPort("198.51.100.7:40000"), netip.MustParseAddrPort("203.0.113.10:80")}, ""},
		{"icmp", "198.51.100.7:40000", "203.0.113.10:80", FlowQuery{}, "proto"},
		{"tcp", "198.51.100.7", "203.0.113.10:80", FlowQuery{}, "src"},
		{"tcp", "198.51.100.7:40000", "2001:db8::10:80", FlowQuery{}, "dst"},
		{"tcp", "198.51.100.7:40000", "203.0.113.10:99999", FlowQuery{}, "dst"},
		{"tcp", "[fe80::1%eth0]:1", "[fe80::2]:80", FlowQuery{}, "src"},
		{"tcp", "[2001:db8::7]:40000", "203.0.113.10:80", FlowQuery{}, "families"},
	} {
		got, err := ParseFlow(c.proto, c.src, c.dst)
		switch {
		case c.wantErr == "" && (err != nil || got != c.want):
			t.Errorf("ParseFlow(%s, %s, %s) = %v, %v; want %v", c.proto, c.src, c.dst, got, err, c.want)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("ParseFlow(%s, %s, %s): error %v, want one naming %s", c.proto, c.src, c.dst, err, c.wantErr)
		}
	}
	q := FlowQuery{lb.ProtoUDP, netip.MustParseAddrPort("[2001:db8::7]:53000"), netip.MustParseAddrPort("[2001:db8::10]:53")}
	if got := FlowsPath(&q); got != "/v1/flows?dst=%5B2001%3Adb8%3A%3A10%5D%3A53&proto=udp&src=%5B2001%3Adb8%3A%3A7%5D%3A53000" {
		t.Errorf("FlowsPath: %s", got)
	}
}

func TestFlowsAPI(t *testing.T) {
	q := func(proto, src, dst string) string {
		return "/v1/flows?proto=" + proto + "&src=" + src + "&dst=" + dst
	}
	for _, c := range []struct {
		name      string
		node      Node
		method    string
		path      string
		wantCode  int
		wantQuery string // what reached the node; "" none
		wantBody  string
	}{
		{"summary", &flowsNode{}, "GET", "/v1/flows", 200, "summary", `"entries": 3`},
		{"lookup", &flowsNode{}, "GET", q("tcp", "198.51.100.7:40000", "203.0.113.10:80"), 200, "tcp 198.51.100.7:40000 -> 203.0.113.10:80", `"tracked": true`},
		{"lookup ipv6, escaped", &flowsNode{}, "GET", FlowsPath(&FlowQuery{lb.ProtoUDP, netip.MustParseAddrPort("[2001:db8::7]:5300"), netip.MustParseAddrPort("[2001:db8::10]:53")}), 200, "udp [2001:db8::7]:5300 -> [2001:db8::10]:53", ""},
		{"lookup ipv6, brackets as typed", &flowsNode{}, "GET", q("udp", "[2001:db8::7]:5300", "[2001:db8::10]:53"), 200, "udp [2001:db8::7]:5300 -> [2001:db8::10]:53", ""},
		{"bad proto", &flowsNode{}, "GET", q("sctp", "198.51.100.7:40000", "203.0.113.10:80"), 400, "", "proto"},
		{"src without a port", &flowsNode{}, "GET", q("tcp", "198.51.100.7", "203.0.113.10:80"), 400, "", `src \"198.51.100.7\"`},
		{"dst missing", &flowsNode{}, "GET", "/v1/flows?proto=tcp&src=198.51.100.7:40000", 400, "", "parameter dst missing"},
		{"two families", &flowsNode{}, "GET", q("tcp", "[2001:db8::7]:1", "203.0.113.10:80"), 400, "", "different address families"},
		{"unknown parameter", &flowsNode{}, "GET", q("tcp", "198.51.100.7:40000", "203.0.113.10:80") + "&vip=web", 400, "", `unknown parameter \"vip\"`},
		{"parameter twice", &flowsNode{}, "GET", q("tcp", "198.51.100.7:40000", "203.0.113.10:80") + "&src=198.51.100.8:1", 400, "", "src given 2 times"},
		{"not this data plane", &flowsNode{err: fmt.Errorf("%w for dataplane nftables: see conntrack -L", ErrUnavailable)}, "GET", "/v1/flows", 501, "summary", "conntrack -L"},
		{"the data plane fails", &flowsNode{err: fmt.Errorf("read conntrack: boom")}, "GET", "/v1/flows", 422, "summary", "boom"},
		{"a node without flows", &recNode{}, "GET", "/v1/flows", 404, "", ""},
		{"not by POST", &flowsNode{}, "POST", "/v1/flows", 405, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(New(slog.New(slog.DiscardHandler), c.node, token, prometheus.NewRegistry()))
			defer srv.Close()
			req, err := http.NewRequest(c.method, srv.URL+c.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.wantCode || !strings.Contains(string(body), c.wantBody) {
				t.Errorf("%s %s: %d %s, want %d with %q", c.method, c.path, resp.StatusCode, body, c.wantCode, c.wantBody)
			}
			var got []string
			if fn, ok := c.node.(*flowsNode); ok {
				got = fn.queries
			}
			if (c.wantQuery == "" && len(got) != 0) || (c.wantQuery != "" && (len(got) != 1 || got[0] != c.wantQuery)) {
				t.Errorf("reached the node: %q, want %q", got, c.wantQuery)
			}
		})
	}
}
