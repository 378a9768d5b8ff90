package admin

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/l4lb/l4lb/internal/buildinfo"
)

// ui holds the status page: plain HTML, CSS and JavaScript embedded in the binary. The
// page reads GET /v1/state and GET /v1/monitor/recent every second and draws its charts
// itself; it loads nothing from anywhere else (the Content-Security-Policy says so) and
// changes nothing.
//
//go:embed ui
var ui embed.FS

// uiPolicy allows the page its own files and its own API, nothing else.
const uiPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// routeUI serves the status page at / and its files under /ui/, and the build at
// /v1/version. They are reads: no token needed.
func (s *Server) routeUI() {
	files, err := fs.Sub(ui, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	static := http.StripPrefix("/ui/", http.FileServerFS(files))
	headers := func(w http.ResponseWriter) {
		h := w.Header()
		h.Set("Content-Security-Policy", uiPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
	}
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		headers(w)
		http.ServeFileFS(w, r, files, "index.html")
	})
	s.mux.HandleFunc("GET /ui/", func(w http.ResponseWriter, r *http.Request) {
		headers(w)
		static.ServeHTTP(w, r)
	})
	s.mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, buildinfo.Get()) })
}
