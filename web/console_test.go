package web

import (
	"regexp"
	"strings"
	"testing"
)

// TestConsolePage: the serial console page and its vendored xterm.js are
// embedded and served (no CDN); the page may be framed by the dashboard
// only, and it alone allows the inline styles xterm.js makes at run time.
func TestConsolePage(t *testing.T) {
	h := Handler()
	for path, ctype := range map[string]string{
		"/ui/console.html": "text/html", "/ui/js/console.js": "text/javascript", "/ui/vendor/xterm/xterm.mjs": "text/javascript",
		"/ui/vendor/xterm/xterm.css": "text/css", "/ui/console.css": "text/css",
	} {
		resp := get(t, h, "GET", path, nil)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("%s: %d %s, want 200 %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), ctype)
		}
	}
	console := get(t, h, "GET", "/ui/console.html", nil).Header
	if csp := console.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'self'") ||
		!strings.Contains(csp, "script-src 'self';") || strings.Contains(csp, "script-src 'self' 'unsafe") {
		t.Errorf("console CSP %q", csp)
	}
	if console.Get("X-Frame-Options") != "SAMEORIGIN" {
		t.Errorf("console X-Frame-Options %q", console.Get("X-Frame-Options"))
	}
	index := get(t, h, "GET", "/ui/", nil).Header.Get("Content-Security-Policy")
	if !strings.Contains(index, "frame-ancestors 'none'") || strings.Contains(index, "unsafe-inline") {
		t.Errorf("index CSP %q", index)
	}
	// console.js imports the vendored module, which is embedded
	hh := h.(*handler)
	imp := regexp.MustCompile(`(?m)^import\s.*from\s+"\.\./(vendor/[a-z/]+\.mjs)";`)
	m := imp.FindSubmatch(hh.assets["js/console.js"].data)
	if m == nil || hh.assets[string(m[1])] == nil {
		t.Fatalf("console.js does not import an embedded xterm.js: %q", m)
	}
	if !strings.Contains(string(hh.assets[string(m[1])].data), "export{") {
		t.Error("the vendored xterm.js is not an ES module")
	}
}
