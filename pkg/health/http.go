package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
)

// HTTP checks an HTTP or HTTPS endpoint: method, path, expected status, optional body
// substring. Every check uses a fresh connection and follows no redirect.
type HTTP struct {
	scheme       string
	method, path string
	status       int
	body         []byte
	client       *http.Client
}

func newHTTP(c Config) *HTTP {
	tr := &http.Transport{DisableKeepAlives: true}
	if c.Type == "https" {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // operator's choice
	}
	return &HTTP{
		scheme: c.Type, method: c.Method, path: c.Path, status: c.ExpectStatus, body: []byte(c.BodyMatch),
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// Check sends one request.
func (h *HTTP) Check(ctx context.Context, target netip.AddrPort) error {
	req, err := http.NewRequestWithContext(ctx, h.method, fmt.Sprintf("%s://%s%s", h.scheme, target, h.path), nil)
	if err != nil {
		return fmt.Errorf("%w: build request: %w", ErrUnhealthy, err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != h.status {
		return fmt.Errorf("%w: %s %s: status %d, want %d", ErrUnhealthy, h.method, h.path, resp.StatusCode, h.status)
	}
	if len(h.body) > 0 {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return fmt.Errorf("%w: read body: %w", ErrUnhealthy, err)
		}
		if !bytes.Contains(b, h.body) {
			return fmt.Errorf("%w: body does not contain %q", ErrUnhealthy, h.body)
		}
	}
	return nil
}
