// Package admin serves l4lb's HTTP API: health and readiness, Prometheus metrics, the
// node's state, and the operator's mutations (drain, weight, reload).
package admin

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Errors a Node returns; they map to HTTP statuses.
var (
	ErrNotFound   = errors.New("not found")
	ErrBadRequest = errors.New("bad request")
	// ErrPending: the change was saved and will be applied, but is not in effect yet.
	ErrPending = errors.New("pending")
	// ErrConflict: the change would cut the node off from something it needs (a deny
	// prefix covering a BGP peer); the request may force it.
	ErrConflict = errors.New("conflict")
)

// Node is what the API reads and changes. A mutation that fails must change nothing.
type Node interface {
	State() any
	Ready() bool
	SetDrain(vip, backend string, drain bool) error
	SetWeight(vip, backend string, weight *uint32) error
	Reload() error
}

// SocketsNode is a node that can say which local processes its socket LB balanced
// (GET /v1/sockets).
type SocketsNode interface {
	Sockets() any
}

// Server is the API's handler.
type Server struct {
	log   *slog.Logger
	node  Node
	token string
	mux   *http.ServeMux
}

// ReadToken reads a bearer token from a file that only its owner may read or write: a
// regular file, no permission bit for its group or others, owned by root or by the user
// running l4lb. Anyone else who could read it could make changes; anyone else who could
// write it could choose the token.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	defer f.Close()
	// The checks are on the open file, so the file read is the file checked.
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("admin token file %s is not a regular file (mode %v)", path, st.Mode())
	}
	if loose := looseBits(st.Mode().Perm()); loose != "" {
		return "", fmt.Errorf("admin token file %s is %s (mode %v): only its owner may have access; chmod 600 %s", path, loose, st.Mode().Perm(), path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return "", fmt.Errorf("admin token file %s is owned by uid %d, neither root nor this user (uid %d): its owner could change the token; chown it", path, sys.Uid, os.Geteuid())
	}
	const maxToken = 4096
	b, err := io.ReadAll(io.LimitReader(f, maxToken+1))
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	if len(b) > maxToken {
		return "", fmt.Errorf("admin token file %s is longer than %d bytes: not a token", path, maxToken)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return tok, nil
}

// looseBits names the permission bits of perm beyond the owner's, "" if none.
func looseBits(perm os.FileMode) string {
	var out []string
	for _, b := range []struct {
		bit  os.FileMode
		name string
	}{
		{0o040, "group-readable"}, {0o020, "group-writable"}, {0o010, "executable by its group"},
		{0o004, "world-readable"}, {0o002, "world-writable"}, {0o001, "executable by others"},
	} {
		if perm&b.bit != 0 {
			out = append(out, b.name)
		}
	}
	switch len(out) {
	case 0:
		return ""
	case 1:
		return out[0]
	}
	return strings.Join(out[:len(out)-1], ", ") + " and " + out[len(out)-1]
}

// New returns the API. token "" makes it read-only. reg is the private registry /metrics
// serves.
func New(logger *slog.Logger, node Node, token string, reg *prometheus.Registry) *Server {
	s := &Server{log: logger.With("component", "admin"), node: node, token: token, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !node.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready: no successful apply yet"})
			return
		}
		writeJSON(w, 200, map[string]string{"status": "ready"})
	})
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s.mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, node.State()) })
	if sn, ok := node.(SocketsNode); ok {
		s.mux.HandleFunc("GET /v1/sockets", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, sn.Sockets()) })
	}
	s.registerFlows() // flows.go
	s.registerTrace() // trace.go
	s.routeUI()
	s.mux.HandleFunc("POST /v1/vips/{vip}/backends/{backend}/drain", s.auth(func(w http.ResponseWriter, r *http.Request) {
		if err := noBody(w, r); err != nil {
			s.result(w, err)
			return
		}
		s.result(w, node.SetDrain(r.PathValue("vip"), r.PathValue("backend"), true))
	}))
	s.mux.HandleFunc("POST /v1/vips/{vip}/backends/{backend}/undrain", s.auth(func(w http.ResponseWriter, r *http.Request) {
		if err := noBody(w, r); err != nil {
			s.result(w, err)
			return
		}
		s.result(w, node.SetDrain(r.PathValue("vip"), r.PathValue("backend"), false))
	}))
	s.mux.HandleFunc("PUT /v1/vips/{vip}/backends/{backend}/weight", s.auth(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Weight json.RawMessage `json:"weight"`
		}
		const want = `want {"weight": N} or {"weight": null}`
		if err := decodeBody(w, r, &body); err != nil {
			s.result(w, fmt.Errorf("%w: body: %s: %v", ErrBadRequest, want, err))
			return
		}
		var wt *uint32
		switch string(body.Weight) {
		case "":
			s.result(w, fmt.Errorf("%w: body: no weight: %s", ErrBadRequest, want))
			return
		case "null": // back to the configured weight
		default:
			var n int64
			if err := json.Unmarshal(body.Weight, &n); err != nil {
				s.result(w, fmt.Errorf("%w: weight %s: want a whole number from 0 to 65536, or null", ErrBadRequest, body.Weight))
				return
			}
			if n < 0 || n > 1<<16 {
				s.result(w, fmt.Errorf("%w: weight %d: want 0 to 65536", ErrBadRequest, n))
				return
			}
			v := uint32(n)
			wt = &v
		}
		s.result(w, node.SetWeight(r.PathValue("vip"), r.PathValue("backend"), wt))
	}))
	s.mux.HandleFunc("POST /v1/reload", s.auth(func(w http.ResponseWriter, r *http.Request) {
		if err := noBody(w, r); err != nil {
			s.result(w, err)
			return
		}
		s.result(w, node.Reload())
	}))
	s.registerDeny() // deny.go
	s.registerMonitor()
	return s
}

// maxBody bounds every request body: the largest one the API takes is {"weight": N}.
const maxBody = 4096

// decodeBody decodes a request body that must be exactly one JSON object: no unknown
// field, no field given twice and nothing after the object, so that a body cannot carry a
// second value that another parser of the same bytes would read instead.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return err
	}
	if err := checkObject(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// checkObject checks that data is one JSON object, with whitespace only after it, whose
// keys are all distinct.
func checkObject(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err == io.EOF {
		return errors.New("empty body")
	}
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("not a JSON object")
	}
	keys := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := tok.(string)
		if keys[k] {
			return fmt.Errorf("field %q given twice", k)
		}
		keys[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing }
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the object")
	}
	return nil
}

// noBody accepts a request that takes no body: an empty one, or an empty JSON object.
func noBody(w http.ResponseWriter, r *http.Request) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil && len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if err == nil {
		err = checkObject(data)
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields() // every field is unknown
		err = dec.Decode(&struct{}{})
	}
	if err != nil {
		return fmt.Errorf("%w: this request takes no body (or {}): %v", ErrBadRequest, err)
	}
	return nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.token == "" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "read-only: no admin.token_file configured"})
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token"})
			return
		}
		next(w, r)
	}
}

func (s *Server) result(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		writeJSON(w, 200, map[string]string{"status": "ok"})
	case errors.Is(err, ErrNotFound):
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
	case errors.Is(err, ErrBadRequest):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	case errors.Is(err, ErrConflict):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
	case errors.Is(err, ErrPending):
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "pending", "error": err.Error()})
	default:
		s.log.Warn("admin request failed", "error", err)
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
