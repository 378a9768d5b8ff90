package testbed

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// Dial opens a TCP connection from a node's namespace (the socket stays there).
func (b *Bed) Dial(node, addr string) (net.Conn, error) {
	return b.DialContext(context.Background(), node, "tcp", addr)
}

// DialContext dials from a node's namespace with a 2 s timeout: the socket is created in
// that namespace and stays there.
func (b *Bed) DialContext(ctx context.Context, node, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(b.NS(node))
	if err != nil {
		return nil, err
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, err
	}
	c, derr := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", err))
	}
	return c, derr
}

// Get sends one HTTP request on a kept-alive connection and returns the body (the
// backend's name).
func Get(c net.Conn, r *bufio.Reader, host string) (string, error) {
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&sb); err != nil {
		return "", err
	}
	return strings.TrimSpace(sb.String()), nil
}

// KeptAlive is an HTTP connection from the client through the IPv4 web VIP, held open,
// with the backend that answered its first request.
type KeptAlive struct {
	C       net.Conn
	R       *bufio.Reader
	Backend string
}

// Get makes another request on the connection and returns the backend that answered.
func (k KeptAlive) Get() (string, error) { return Get(k.C, k.R, VIP4) }

// OpenKeptAlive opens n kept-alive connections from the client to the IPv4 web VIP and
// makes a first request on each. On an error it closes those it opened.
func (b *Bed) OpenKeptAlive(n int) ([]KeptAlive, error) {
	var conns []KeptAlive
	fail := func(err error) ([]KeptAlive, error) {
		for _, k := range conns {
			k.C.Close()
		}
		return nil, err
	}
	for i := 0; i < n; i++ {
		c, err := b.Dial("client", net.JoinHostPort(VIP4, "80"))
		if err != nil {
			return fail(fmt.Errorf("connection %d: %w", i, err))
		}
		k := KeptAlive{C: c, R: bufio.NewReader(c)}
		if k.Backend, err = k.Get(); err != nil {
			c.Close()
			return fail(fmt.Errorf("connection %d, first request: %w", i, err))
		}
		conns = append(conns, k)
	}
	return conns, nil
}
