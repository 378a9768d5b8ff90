package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

// HTTP checks an HTTP or HTTPS endpoint: method, path, expected status, optional body
// substring. Every check uses a fresh connection and follows no redirect.
type HTTP struct {
	scheme       string
	method, path string
	status       int
	body         []byte
	tls          *tls.Config // https only
}

func newHTTP(c Config) (*HTTP, error) {
	h := &HTTP{scheme: c.Type, method: c.Method, path: c.Path, status: c.ExpectStatus, body: []byte(c.BodyMatch)}
	if c.Type != "https" {
		return h, nil
	}
	h.tls = &tls.Config{ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // operator's choice
	if c.CAFile != "" {
		pool, err := loadCAFile(c.CAFile)
		if err != nil {
			return nil, err
		}
		h.tls.RootCAs = pool
	}
	return h, nil
}

// loadCAFile reads a PEM bundle of CA certificates.
func loadCAFile(name string) (*x509.CertPool, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("health check ca file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("health check ca file %s: %w", name, ErrNoCertificate)
	}
	return pool, nil
}

// client returns a client whose connections are p's: dialed to p.Addr with p's mark. A
// transport of its own per check keeps one probe's connection from ever serving
// another's; with keep-alives off a transport holds nothing between checks anyway.
func (h *HTTP) client(p Probe) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   h.tls,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, "tcp", p)
		},
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Check sends one request to p.Addr, which is also the URL's host.
func (h *HTTP) Check(ctx context.Context, p Probe) error {
	req, err := http.NewRequestWithContext(ctx, h.method, fmt.Sprintf("%s://%s%s", h.scheme, p.Addr, h.path), nil)
	if err != nil {
		return fmt.Errorf("%w: build request: %w", ErrUnhealthy, err)
	}
	where := h.method + " " + req.URL.String()
	if p.Mark != 0 {
		where += fmt.Sprintf(" mark %#x", p.Mark)
	}
	resp, err := h.client(p).Do(req)
	if err != nil {
		if p.Mark != 0 { // the client's error names the method and URL, not the mark
			return fmt.Errorf("%w: mark %#x: %w", ErrUnhealthy, p.Mark, err)
		}
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != h.status {
		return fmt.Errorf("%w: %s: status %d, want %d", ErrUnhealthy, where, resp.StatusCode, h.status)
	}
	if len(h.body) > 0 {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return fmt.Errorf("%w: %s: read body: %w", ErrUnhealthy, where, err)
		}
		if !bytes.Contains(b, h.body) {
			return fmt.Errorf("%w: %s: body does not contain %q", ErrUnhealthy, where, h.body)
		}
	}
	return nil
}
