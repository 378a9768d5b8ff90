package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Serve runs a backend's servers until ctx ends: HTTP on :80 answering every request with
// the backend's name (and a newline), and a UDP echo on :53 answering every datagram with
// the name. Both listen on every address, the VIPs on lo included; UDP replies leave from
// the address the datagram was sent to (the VIP), as a DSR backend's must.
func Serve(ctx context.Context, name, httpAddr string, udpPort int) error {
	ln, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return err
	}
	errc := make(chan error, 3)
	var closers []io.Closer
	for _, fam := range []string{"udp4", "udp6"} {
		pc, err := net.ListenPacket(fam, fmt.Sprintf(":%d", udpPort))
		if err != nil {
			ln.Close()
			return err
		}
		closers = append(closers, pc)
		go func() { errc <- echo(pc, fam, name) }()
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, name)
	})}
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	for _, c := range closers {
		c.Close()
	}
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// echo answers each datagram with name, from the datagram's destination address.
func echo(pc net.PacketConn, fam, name string) error {
	reply := []byte(name + "\n")
	buf := make([]byte, 2048)
	if fam == "udp4" {
		p := ipv4.NewPacketConn(pc)
		if err := p.SetControlMessage(ipv4.FlagDst, true); err != nil {
			return err
		}
		for {
			_, cm, from, err := p.ReadFrom(buf)
			if err != nil {
				return err
			}
			var out *ipv4.ControlMessage
			if cm != nil {
				out = &ipv4.ControlMessage{Src: cm.Dst}
			}
			_, _ = p.WriteTo(reply, out, from)
		}
	}
	p := ipv6.NewPacketConn(pc)
	if err := p.SetControlMessage(ipv6.FlagDst, true); err != nil {
		return err
	}
	for {
		_, cm, from, err := p.ReadFrom(buf)
		if err != nil {
			return err
		}
		var out *ipv6.ControlMessage
		if cm != nil {
			out = &ipv6.ControlMessage{Src: cm.Dst}
		}
		_, _ = p.WriteTo(reply, out, from)
	}
}

// UDPProbe sends count datagrams to addr, each from a new socket (so a new flow), and
// writes each reply, or "timeout", on a line of its own.
func UDPProbe(ctx context.Context, w io.Writer, addr string, count int) error {
	for i := 0; i < count; i++ {
		c, err := (&net.Dialer{}).DialContext(ctx, "udp", addr)
		if err != nil {
			return err
		}
		_ = c.SetDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 512)
		_, err = c.Write([]byte("ping"))
		n := 0
		if err == nil {
			n, err = c.Read(buf)
		}
		c.Close()
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			fmt.Fprintln(w, "timeout")
		case err != nil:
			return err
		default:
			fmt.Fprint(w, string(buf[:n]))
		}
	}
	return nil
}
