package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"

	"github.com/l4lb/l4lb/pkg/config"
)

// DenyNode is a Node whose data plane has a prefilter deny list. The routes below exist
// only when the node implements it.
type DenyNode interface {
	// DenyAdd and DenyDelete change the run-time deny list; a failure changes nothing.
	DenyAdd([]netip.Prefix) error
	DenyDelete([]netip.Prefix) error
	// DenyList returns the list with each prefix's drops.
	DenyList() (any, error)
}

// maxDenyBody bounds a deny request: about a million prefixes.
const maxDenyBody = 64 << 20

// registerDeny adds GET /v1/deny, POST /v1/deny and DELETE /v1/deny (body
// {"prefixes": ["198.51.100.0/28", ...]}; an address stands for its /32 or /128).
func (s *Server) registerDeny() {
	dn, ok := s.node.(DenyNode)
	if !ok {
		return
	}
	s.mux.HandleFunc("GET /v1/deny", func(w http.ResponseWriter, _ *http.Request) {
		list, err := dn.DenyList()
		if err != nil {
			s.result(w, err)
			return
		}
		writeJSON(w, 200, list)
	})
	change := func(apply func([]netip.Prefix) error) http.HandlerFunc {
		return s.auth(func(w http.ResponseWriter, r *http.Request) {
			ps, err := decodePrefixes(w, r)
			if err != nil {
				s.result(w, err)
				return
			}
			s.result(w, apply(ps))
		})
	}
	s.mux.HandleFunc("POST /v1/deny", change(dn.DenyAdd))
	s.mux.HandleFunc("DELETE /v1/deny", change(dn.DenyDelete))
}

// decodePrefixes reads {"prefixes": [...]}; every entry must parse, or nothing is done.
func decodePrefixes(w http.ResponseWriter, r *http.Request) ([]netip.Prefix, error) {
	const want = `want {"prefixes": ["198.51.100.0/28", ...]}`
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDenyBody))
	if err == nil {
		err = checkObject(data)
	}
	var body struct {
		Prefixes []string `json:"prefixes"`
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		err = dec.Decode(&body)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: body: %s: %v", ErrBadRequest, want, err)
	}
	if len(body.Prefixes) == 0 {
		return nil, fmt.Errorf("%w: body: no prefixes: %s", ErrBadRequest, want)
	}
	out := make([]netip.Prefix, 0, len(body.Prefixes))
	for _, s := range body.Prefixes {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		out = append(out, p)
	}
	return out, nil
}
