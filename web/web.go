// Package web is the vpool dashboard: plain HTML, CSS and JavaScript
// modules (no build step, no framework, nothing fetched from elsewhere)
// embedded into the binary and served under Prefix. The browser talks to
// the REST API under /api/v1 with the bearer token the user typed in; this
// package serves files only and holds no state.
//
// It imports only the standard library: never the server, the store, the
// client or any other vpool package.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is where the dashboard lives. Mount Handler on it (and on the
// root, which it redirects here):
//
//	mux.Handle(web.Prefix, web.Handler())
//	mux.Handle("GET /{$}", web.Handler())
const Prefix = "/ui/"

//go:embed static
var static embed.FS

// contentSecurityPolicy allows nothing but this origin: no inline script
// or style, no other hosts (the machine may have no internet anyway).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

// consolePage is the serial console (xterm.js), framed by the dashboard.
const consolePage = "console.html"

// consoleSecurityPolicy is the console page's: xterm.js writes its
// renderer's styles into <style> elements it makes at run time, so this
// page alone allows inline styles (never inline script); only the
// dashboard may frame it.
const consoleSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'; object-src 'none'"

// contentTypes is fixed here rather than taken from mime.TypeByExtension,
// which reads the host's /etc/mime.types: a module script served with a
// wrong type is refused by the browser.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".mjs":  "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".txt":  "text/plain; charset=utf-8",
}

// asset is one embedded file, ready to serve.
type asset struct {
	name  string
	data  []byte
	ctype string
	etag  string
}

// handler serves the embedded files.
type handler struct {
	assets map[string]*asset // by path relative to static/, e.g. "js/api.js"
}

// Handler returns the dashboard handler. It serves GET and HEAD of the
// embedded files under Prefix (Prefix itself is index.html), redirects
// "/" and "/ui" to Prefix, and answers 404 for anything else — directories
// included: there is no listing.
func Handler() http.Handler {
	h, err := newHandler(static)
	if err != nil {
		// The files are compiled in; failing to read them is a build bug.
		panic(err)
	}
	return h
}

func newHandler(fsys fs.FS) (*handler, error) {
	sub, err := fs.Sub(fsys, "static")
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	h := &handler{assets: map[string]*asset{}}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(data)
		h.assets[p] = &asset{name: p, data: data, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: reading embedded files: %w", err)
	}
	if h.assets["index.html"] == nil {
		return nil, fmt.Errorf("web: embedded files have no index.html")
	}
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	if p == "/" || p == strings.TrimSuffix(Prefix, "/") {
		http.Redirect(w, r, Prefix, http.StatusFound)
		return
	}
	rel, ok := strings.CutPrefix(p, Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if rel == "" {
		rel = "index.html"
	}
	a := h.assets[rel]
	if a == nil {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", a.ctype)
	hdr.Set("ETag", a.etag)
	// Revalidate every time (the ETag makes that a 304): a new binary's
	// modules must never mix with an old cached one.
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	switch {
	case rel == consolePage:
		hdr.Set("Content-Security-Policy", consoleSecurityPolicy)
		hdr.Set("X-Frame-Options", "SAMEORIGIN")
	case a.ctype == contentTypes[".html"]:
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.data))
}
