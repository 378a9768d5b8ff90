package health

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a self-signed CA, written as PEM to a temporary file, that signs one server
// certificate for be1.example.net and 127.0.0.1.
type testCA struct {
	file string
	cert tls.Certificate // the server's
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "l4lb test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "be1.example.net"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: []string{"be1.example.net"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return testCA{file: file, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// tlsServer serves 200 with ca's certificate and records the SNI of each handshake.
func tlsServer(t *testing.T, ca testCA) (netip.AddrPort, <-chan string) {
	t.Helper()
	sni := make(chan string, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.cert}, GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		select {
		case sni <- hello.ServerName:
		default:
		}
		return nil, nil
	}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failing handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return netip.MustParseAddrPort(srv.Listener.Addr().String()), sni
}

func TestHTTPSServerNameAndCAFile(t *testing.T) {
	ca := newTestCA(t)
	ap, sni := tlsServer(t, ca)
	for _, tc := range []struct {
		name    string
		c       Config
		wantSNI string
		wantErr string // "" for healthy
	}{
		{"server name the certificate carries", Config{ServerName: "be1.example.net", CAFile: ca.file}, "be1.example.net", ""},
		{"no server name: verified against the URL's IP, no SNI", Config{CAFile: ca.file}, "", ""},
		{"wrong server name", Config{ServerName: "be2.example.net", CAFile: ca.file}, "be2.example.net", "certificate is valid for be1.example.net, not be2.example.net"},
		{"system roots", Config{ServerName: "be1.example.net"}, "be1.example.net", "certificate signed by unknown authority"},
		{"insecure skip verify, wrong name", Config{ServerName: "be2.example.net", InsecureSkipVerify: true}, "be2.example.net", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.Type = "https"
			err := check(t, tc.c, ap)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unhealthy: %v", err)
			case tc.wantErr != "":
				var cve *tls.CertificateVerificationError
				if !errors.Is(err, ErrUnhealthy) || !errors.As(err, &cve) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want a certificate verification error with %q", err, tc.wantErr)
				}
			}
			if got := <-sni; got != tc.wantSNI {
				t.Errorf("SNI %q, want %q", got, tc.wantSNI)
			}
		})
	}
}

func TestNewCAFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	empty := filepath.Join(dir, "not-a-ca.pem")
	if err := os.WriteFile(empty, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		want error
	}{{missing, os.ErrNotExist}, {empty, ErrNoCertificate}} {
		_, err := New(Config{Type: "https", CAFile: tc.file}.WithDefaults())
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.file) {
			t.Errorf("New with ca file %s: %v, want %v naming the file", tc.file, err, tc.want)
		}
	}
}
