// Package admin serves l4lb's HTTP API: health and readiness, Prometheus metrics, the
// node's state, and the operator's mutations (drain, weight, reload).
package admin

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Errors a Node returns; they map to HTTP statuses.
var (
	ErrNotFound   = errors.New("not found")
	ErrBadRequest = errors.New("bad request")
)

// Node is what the API reads and changes. A mutation that fails must change nothing.
type Node interface {
	State() any
	Ready() bool
	SetDrain(vip, backend string, drain bool) error
	SetWeight(vip, backend string, weight *uint32) error
	Reload() error
}

// Server is the API's handler.
type Server struct {
	log   *slog.Logger
	node  Node
	token string
	mux   *http.ServeMux
}

// ReadToken reads a bearer token from a file that must not be readable by others.
func ReadToken(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	if st.Mode().Perm()&0o004 != 0 {
		return "", fmt.Errorf("admin token file %s is world-readable (mode %v): chmod o-r it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return tok, nil
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
	s.mux.HandleFunc("POST /v1/vips/{vip}/backends/{backend}/drain", s.auth(func(w http.ResponseWriter, r *http.Request) {
		s.result(w, node.SetDrain(r.PathValue("vip"), r.PathValue("backend"), true))
	}))
	s.mux.HandleFunc("POST /v1/vips/{vip}/backends/{backend}/undrain", s.auth(func(w http.ResponseWriter, r *http.Request) {
		s.result(w, node.SetDrain(r.PathValue("vip"), r.PathValue("backend"), false))
	}))
	s.mux.HandleFunc("PUT /v1/vips/{vip}/backends/{backend}/weight", s.auth(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Weight *int64 `json:"weight"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			s.result(w, fmt.Errorf("%w: body: want {\"weight\": N} or {\"weight\": null}: %v", ErrBadRequest, err))
			return
		}
		var wt *uint32
		if body.Weight != nil {
			if *body.Weight < 0 || *body.Weight > 1<<16 {
				s.result(w, fmt.Errorf("%w: weight %d: want 0 to 65536", ErrBadRequest, *body.Weight))
				return
			}
			v := uint32(*body.Weight)
			wt = &v
		}
		s.result(w, node.SetWeight(r.PathValue("vip"), r.PathValue("backend"), wt))
	}))
	s.mux.HandleFunc("POST /v1/reload", s.auth(func(w http.ResponseWriter, _ *http.Request) { s.result(w, node.Reload()) }))
	return s
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
