package web

import (
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandler(t *testing.T) {
	h := Handler()
	tests := []struct {
		name     string
		method   string
		path     string
		status   int
		ctype    string // prefix of Content-Type
		location string
		body     string // substring of the body
	}{
		{name: "index at the prefix", method: "GET", path: "/ui/", status: 200, ctype: "text/html; charset=utf-8", body: `<script type="module" src="js/main.js">`},
		{name: "index by name", method: "GET", path: "/ui/index.html", status: 200, ctype: "text/html"},
		{name: "stylesheet", method: "GET", path: "/ui/app.css", status: 200, ctype: "text/css; charset=utf-8"},
		{name: "module", method: "GET", path: "/ui/js/main.js", status: 200, ctype: "text/javascript; charset=utf-8", body: "import"},
		{name: "icon", method: "GET", path: "/ui/favicon.svg", status: 200, ctype: "image/svg+xml"},
		{name: "head", method: "HEAD", path: "/ui/js/api.js", status: 200, ctype: "text/javascript"},
		{name: "root redirects", method: "GET", path: "/", status: http.StatusFound, location: "/ui/"},
		{name: "bare prefix redirects", method: "GET", path: "/ui", status: http.StatusFound, location: "/ui/"},
		{name: "no directory listing", method: "GET", path: "/ui/js/", status: 404},
		{name: "no directory listing without slash", method: "GET", path: "/ui/js", status: 404},
		{name: "missing file", method: "GET", path: "/ui/nope.js", status: 404},
		{name: "no escape from static", method: "GET", path: "/ui/../web.go", status: 404},
		{name: "not under the prefix", method: "GET", path: "/api/v1/cluster", status: 404},
		{name: "no writes", method: "POST", path: "/ui/", status: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, h, tt.method, tt.path, nil)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("%s %s = %d, want %d (body %q)", tt.method, tt.path, resp.StatusCode, tt.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); tt.ctype != "" && !strings.HasPrefix(ct, tt.ctype) {
				t.Errorf("Content-Type = %q, want %q", ct, tt.ctype)
			}
			if loc := resp.Header.Get("Location"); loc != tt.location {
				t.Errorf("Location = %q, want %q", loc, tt.location)
			}
			if tt.body != "" && !strings.Contains(string(body), tt.body) {
				t.Errorf("body does not contain %q", tt.body)
			}
			if tt.status == 200 && resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("X-Content-Type-Options: nosniff is missing")
			}
			if tt.method == "HEAD" && len(body) != 0 {
				t.Errorf("HEAD answered a body of %d bytes", len(body))
			}
		})
	}
}

func TestIndexHasStrictCSP(t *testing.T) {
	resp := get(t, Handler(), "GET", "/ui/", nil)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP %q allows inline code", csp)
	}
}

func TestETagRevalidates(t *testing.T) {
	h := Handler()
	first := get(t, h, "GET", "/ui/js/main.js", nil)
	etag := first.Header.Get("ETag")
	if etag == "" || first.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("ETag %q, Cache-Control %q: want an ETag and no-cache", etag, first.Header.Get("Cache-Control"))
	}
	again := get(t, h, "GET", "/ui/js/main.js", map[string]string{"If-None-Match": etag})
	if again.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation = %d, want 304", again.StatusCode)
	}
}

// TestNothingExternal keeps the dashboard self-contained: the machine that
// runs vpool may have no internet, and the CSP would refuse it anyway.
func TestNothingExternal(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import\s+url\(\s*["']?https?:|from\s+["']https?:|import\(\s*["']https?:`)
	inline := regexp.MustCompile(`(?i)<script>|<script\s+(type="module"\s*)?>|\sstyle="|\son[a-z]+="`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		if m := external.Find(data); m != nil {
			t.Errorf("%s loads something from elsewhere: %q", p, m)
		}
		if strings.HasSuffix(p, ".html") {
			if m := inline.Find(data); m != nil {
				t.Errorf("%s has inline script or style, which the CSP refuses: %q", p, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestModulesImportOnlyEmbeddedFiles(t *testing.T) {
	h := Handler().(*handler)
	imp := regexp.MustCompile(`(?m)^import\s.*from\s+"\./([a-z]+\.js)";`)
	for name, a := range h.assets {
		if !strings.HasPrefix(name, "js/") {
			continue
		}
		for _, m := range imp.FindAllStringSubmatch(string(a.data), -1) {
			if h.assets["js/"+m[1]] == nil {
				t.Errorf("%s imports ./%s, which is not embedded", name, m[1])
			}
		}
	}
}

func TestNewHandlerNeedsIndex(t *testing.T) {
	fsys := fstest.MapFS{"static/app.css": {Data: []byte("body{}")}}
	if _, err := newHandler(fsys); err == nil {
		t.Error("newHandler without index.html: no error")
	}
}

// TestImportsOnlyStdlib keeps the package a file server: no vpool package,
// no third-party module.
func TestImportsOnlyStdlib(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range ast.Imports {
			path, _ := strconv.Unquote(im.Path.Value)
			if strings.Contains(strings.SplitN(path, "/", 2)[0], ".") {
				t.Errorf("%s imports %s: package web imports only the standard library", f, path)
			}
		}
	}
}
