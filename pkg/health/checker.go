package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

var (
	// ErrUnhealthy is wrapped by every failed check.
	ErrUnhealthy = errors.New("unhealthy")
	// ErrWrongReply, ErrNoReply and ErrPortUnreachable tell a udp check's failures apart.
	ErrWrongReply      = errors.New("wrong reply")
	ErrNoReply         = errors.New("no reply")
	ErrPortUnreachable = errors.New("port unreachable")
	// ErrNoCertificate is New's error for a CA file without a PEM certificate.
	ErrNoCertificate = errors.New("no PEM certificate in it")
)

// Probe is where one check goes.
type Probe struct {
	Addr netip.AddrPort // what the probe connects to: the backend's address:port, or VIP:port for a tunnel check
	Mark uint32         // SO_MARK for the probe's socket; 0: none (needs CAP_NET_ADMIN when set)
}

// String is the address, and the mark when there is one, as errors and logs show them.
func (p Probe) String() string {
	if p.Mark == 0 {
		return p.Addr.String()
	}
	return fmt.Sprintf("%s mark %#x", p.Addr, p.Mark)
}

// Checker checks one probe; nil means healthy.
type Checker interface {
	Check(ctx context.Context, p Probe) error
}

// Config describes a check (the config file's health section). It stays comparable with
// ==: Prober.Set compares it to decide whether a probe restarts.
type Config struct {
	Type               string // tcp, http, https, udp
	Interval, Timeout  time.Duration
	Rise, Fall         int
	Method, Path       string
	ExpectStatus       int
	BodyMatch          string
	Payload, Expect    string
	InsecureSkipVerify bool
	ServerName         string // https: SNI and the name the certificate must carry; empty: the URL's host
	CAFile             string // https: PEM bundle the certificate must chain to, instead of the system roots
}

// WithDefaults fills in what is unset.
func (c Config) WithDefaults() Config {
	if c.Type == "" {
		c.Type = "tcp"
	}
	if c.Interval == 0 {
		c.Interval = 2 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = min(time.Second, c.Interval)
	}
	if c.Rise == 0 {
		c.Rise = 2
	}
	if c.Fall == 0 {
		c.Fall = 3
	}
	if c.Method == "" {
		c.Method = "GET"
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.ExpectStatus == 0 {
		c.ExpectStatus = 200
	}
	return c
}

// New returns the checker for c.Type. An https check's CAFile is read here, once.
func New(c Config) (Checker, error) {
	switch c.Type {
	case "tcp":
		return TCP{}, nil
	case "http", "https":
		return newHTTP(c)
	case "udp":
		return UDP{Payload: []byte(c.Payload), Expect: []byte(c.Expect)}, nil
	}
	return nil, fmt.Errorf("health check type %q: want tcp, http, https or udp", c.Type)
}
