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
	// DenyAdd refuses, with ErrConflict, prefixes that cover an address the node needs
	// (see DenyOptions), unless forced.
	DenyAdd([]netip.Prefix, DenyOptions) error
	DenyDelete([]netip.Prefix) error
	// DenyList returns the list with each prefix's drops.
	DenyList() (any, error)
}

// DenyOptions qualify an addition to the deny list.
type DenyOptions struct {
	// Force adds prefixes that cover a BGP peer, a backend or Client.
	Force bool
	// Client is the address the request came from (invalid if unknown): a prefix that
	// covers it would cut off whoever is making the change.
	Client netip.Addr
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
	s.mux.HandleFunc("POST /v1/deny", s.auth(func(w http.ResponseWriter, r *http.Request) {
		var body denyBody
		ps, err := decodePrefixes(w, r, &body, `want {"prefixes": ["198.51.100.0/28", ...], "force": false}`)
		if err != nil {
			s.result(w, err)
			return
		}
		opts := DenyOptions{Force: body.Force}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			opts.Client = ap.Addr().Unmap()
		}
		s.result(w, dn.DenyAdd(ps, opts))
	}))
	s.mux.HandleFunc("DELETE /v1/deny", s.auth(func(w http.ResponseWriter, r *http.Request) {
		var body prefixesBody
		ps, err := decodePrefixes(w, r, &body, `want {"prefixes": ["198.51.100.0/28", ...]}`)
		if err != nil {
			s.result(w, err)
			return
		}
		s.result(w, dn.DenyDelete(ps))
	}))
}

type prefixesBody struct {
	Prefixes []string `json:"prefixes"`
}

func (b *prefixesBody) list() []string { return b.Prefixes }

type denyBody struct {
	Prefixes []string `json:"prefixes"`
	Force    bool     `json:"force"`
}

func (b *denyBody) list() []string { return b.Prefixes }

// decodePrefixes reads a body with "prefixes" into body; every entry must parse, or
// nothing is done.
func decodePrefixes(w http.ResponseWriter, r *http.Request, body interface{ list() []string }, want string) ([]netip.Prefix, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDenyBody))
	if err == nil {
		err = checkObject(data)
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		err = dec.Decode(body)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: body: %s: %v", ErrBadRequest, want, err)
	}
	if len(body.list()) == 0 {
		return nil, fmt.Errorf("%w: body: no prefixes: %s", ErrBadRequest, want)
	}
	out := make([]netip.Prefix, 0, len(body.list()))
	for _, s := range body.list() {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		out = append(out, p)
	}
	return out, nil
}
