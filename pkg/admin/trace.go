package admin

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// TraceNode is a node that can trace a packet through its data plane (GET /v1/trace).
type TraceNode interface {
	// Trace answers ErrUnavailable when its data plane has no trace.
	Trace(TraceQuery) (any, error)
}

// TraceQuery is a packet to trace: a flow, the TCP flags of the packet (S, A, F, R, P,
// U; empty: ACK, a packet of an established connection) and its IP size (0: headers only).
type TraceQuery struct {
	FlowQuery
	Flags string
	Size  int
}

func (q TraceQuery) String() string {
	s := q.FlowQuery.String()
	if q.Flags != "" {
		s += " flags " + q.Flags
	}
	if q.Size > 0 {
		s += fmt.Sprintf(" size %d", q.Size)
	}
	return s
}

// MaxTraceSize is the largest IP packet a trace builds (a jumbo frame).
const MaxTraceSize = 9000

var traceParams = []string{"proto", "src", "dst", "flags", "size"}

// ParseTrace reads a packet to trace; an error names the parameter that is wrong.
func ParseTrace(proto, src, dst, flags, size string) (TraceQuery, error) {
	f, err := ParseFlow(proto, src, dst)
	if err != nil {
		return TraceQuery{}, err
	}
	q := TraceQuery{FlowQuery: f, Flags: strings.ToUpper(flags)}
	if q.Flags != "" && f.Proto.String() != "tcp" {
		return q, fmt.Errorf("%w: flags %q: only a tcp packet has flags", ErrBadRequest, flags)
	}
	for _, c := range q.Flags {
		if !strings.ContainsRune("SAFRPU", c) {
			return q, fmt.Errorf("%w: flags %q: want letters of S A F R P U", ErrBadRequest, flags)
		}
	}
	if q.Flags == "" && f.Proto.String() == "tcp" {
		q.Flags = "A"
	}
	if size != "" {
		n, err := strconv.Atoi(size)
		if err != nil || n < 0 || n > MaxTraceSize {
			return q, fmt.Errorf("%w: size %q: want the IP packet's length in bytes, 0..%d", ErrBadRequest, size, MaxTraceSize)
		}
		q.Size = n
	}
	return q, nil
}

// TracePath is the path and query that traces q.
func TracePath(q TraceQuery) string {
	v := url.Values{"proto": {q.Proto.String()}, "src": {q.Src.String()}, "dst": {q.Dst.String()}}
	if q.Flags != "" {
		v.Set("flags", q.Flags)
	}
	if q.Size > 0 {
		v.Set("size", strconv.Itoa(q.Size))
	}
	return "/v1/trace?" + v.Encode()
}

// registerTrace adds GET /v1/trace. It changes nothing, but runs a program in the kernel
// for each call: it takes the token, as the writes do.
func (s *Server) registerTrace() {
	tn, ok := s.node.(TraceNode)
	if !ok {
		return
	}
	s.mux.HandleFunc("GET /v1/trace", s.auth(func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query()
		if err := checkParams(v, traceParams, traceParams[:3], "a trace", ""); err != nil {
			s.result(w, err)
			return
		}
		q, err := ParseTrace(v.Get("proto"), v.Get("src"), v.Get("dst"), v.Get("flags"), v.Get("size"))
		if err != nil {
			s.result(w, err)
			return
		}
		out, err := tn.Trace(q)
		switch {
		case errors.Is(err, ErrUnavailable):
			writeJSON(w, http.StatusNotImplemented, map[string]string{"error": err.Error()})
		case err != nil:
			s.result(w, err)
		default:
			writeJSON(w, http.StatusOK, out)
		}
	}))
}
