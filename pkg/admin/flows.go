package admin

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/l4lb/l4lb/pkg/lb"
)

// FlowsNode is a node that can look into its data plane's flow table (GET /v1/flows).
// Both calls only read: they change no entry and no counter.
type FlowsNode interface {
	// FlowSummary describes the whole table.
	FlowSummary() (any, error)
	// FlowLookup says what the table holds for one flow, and what its next packet gets.
	FlowLookup(FlowQuery) (any, error)
}

// ErrUnavailable: the node's data plane keeps no flow table it can read (501); the error
// says where its flows are kept instead.
var ErrUnavailable = errors.New("not available")

// FlowQuery is one flow as its packets reach the node: from a client to a VIP.
type FlowQuery struct {
	Proto    lb.Proto
	Src, Dst netip.AddrPort
}

func (q FlowQuery) String() string { return fmt.Sprintf("%s %s -> %s", q.Proto, q.Src, q.Dst) }

// flowParams are the query parameters of a lookup: GET /v1/flows?proto=tcp&src=ADDR:PORT&dst=ADDR:PORT.
var flowParams = []string{"proto", "src", "dst"}

// ParseFlow reads a flow: proto tcp or udp, src and dst ADDR:PORT ([ADDR]:PORT for
// IPv6), of one family. An error names the parameter that is wrong.
func ParseFlow(proto, src, dst string) (FlowQuery, error) {
	var q FlowQuery
	p, err := lb.ParseProto(proto)
	if err != nil {
		return q, fmt.Errorf("%w: proto %q: want tcp or udp", ErrBadRequest, proto)
	}
	q.Proto = p
	for _, a := range []struct {
		name, s string
		to      *netip.AddrPort
	}{{"src", src, &q.Src}, {"dst", dst, &q.Dst}} {
		ap, err := netip.ParseAddrPort(a.s)
		if err != nil {
			return q, fmt.Errorf("%w: %s %q: want ADDR:PORT, [ADDR]:PORT for IPv6", ErrBadRequest, a.name, a.s)
		}
		if ap.Addr().Zone() != "" {
			return q, fmt.Errorf("%w: %s %q: an address with a zone is no flow's", ErrBadRequest, a.name, a.s)
		}
		*a.to = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if q.Src.Addr().Is4() != q.Dst.Addr().Is4() {
		return q, fmt.Errorf("%w: dst %s and src %s are of different address families: a flow has one", ErrBadRequest, q.Dst.Addr(), q.Src.Addr())
	}
	return q, nil
}

// flowQuery reads the lookup parameters v: none (ok false: the summary), or all of
// them, each once, and no other.
func flowQuery(v url.Values) (FlowQuery, bool, error) {
	if len(v) == 0 {
		return FlowQuery{}, false, nil
	}
	if err := checkParams(v, flowParams, flowParams, "a lookup", " (none: the summary)"); err != nil {
		return FlowQuery{}, false, err
	}
	q, err := ParseFlow(v.Get("proto"), v.Get("src"), v.Get("dst"))
	return q, true, err
}

// checkParams checks query v: only parameters of known, each once, and every one of
// required. what names the call in errors ("a lookup takes ..."); missingNote follows a
// missing parameter's error.
func checkParams(v url.Values, known, required []string, what, missingNote string) error {
	for k, vals := range v {
		if !slices.Contains(known, k) {
			return fmt.Errorf("%w: unknown parameter %q: %s takes %s", ErrBadRequest, k, what, strings.Join(known, ", "))
		}
		if len(vals) != 1 {
			return fmt.Errorf("%w: parameter %s given %d times", ErrBadRequest, k, len(vals))
		}
	}
	for _, k := range required {
		if !v.Has(k) {
			return fmt.Errorf("%w: parameter %s missing: %s takes %s%s", ErrBadRequest, k, what, strings.Join(known, ", "), missingNote)
		}
	}
	return nil
}

// FlowsPath is the lookup's path and query for q.
func FlowsPath(q *FlowQuery) string {
	if q == nil {
		return "/v1/flows"
	}
	return "/v1/flows?" + url.Values{"proto": {q.Proto.String()}, "src": {q.Src.String()}, "dst": {q.Dst.String()}}.Encode()
}

// registerFlows adds GET /v1/flows: with no parameter the flow table's summary; with
// proto, src and dst one flow's lookup.
func (s *Server) registerFlows() {
	fn, ok := s.node.(FlowsNode)
	if !ok {
		return
	}
	s.mux.HandleFunc("GET /v1/flows", func(w http.ResponseWriter, r *http.Request) {
		q, lookup, err := flowQuery(r.URL.Query())
		var v any
		switch {
		case err != nil:
		case lookup:
			v, err = fn.FlowLookup(q)
		default:
			v, err = fn.FlowSummary()
		}
		switch {
		case errors.Is(err, ErrUnavailable):
			writeJSON(w, http.StatusNotImplemented, map[string]string{"error": err.Error()})
		case err != nil:
			s.result(w, err)
		default:
			writeJSON(w, 200, v)
		}
	})
}
