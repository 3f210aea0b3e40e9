package browser

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// sharedScreenshot is where the test leaves a copy of its screenshot for
// people to look at.
const sharedScreenshot = "/tmp/vpool-dashboard.png"

// page drives one tab; every step has its own timeout and a failure
// leaves a screenshot and the console behind.
type page struct {
	t       *testing.T
	ctx     context.Context
	console *console
	dir     string // screenshots
}

func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitJSTimeout+5*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.fail(what, err)
	}
}

// waitJS waits until the JavaScript expression is truthy.
// waitJSTimeout bounds a wait for the page: 12 s was not enough for the
// console to connect once on a machine loaded 17 times over (CI).
const waitJSTimeout = 30 * time.Second

func (p *page) waitJS(what, expr string) {
	p.t.Helper()
	p.do(what, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(waitJSTimeout))(ctx, t)
		return chromedp.Void{}, err
	})
}

// click clicks the first element matching a CSS selector, found and
// clicked in one step of page script, retrying until it exists and is
// enabled. Rows re-render as events arrive, so a node found by one
// DevTools call may be gone by the next ("Could not find node with given
// id"), which made a chromedp.Click on a row's button flaky.
func (p *page) click(what, sel string) {
	p.t.Helper()
	p.waitJS(what, `(() => { const e = document.querySelector(`+strconv.Quote(sel)+`); if (!e || e.disabled) return false; e.click(); return true })()`)
}

// text returns the textContent of the first element matching a CSS
// selector ("" when there is none).
func (p *page) text(sel string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector(`+strconv.Quote(sel)+`)?.textContent ?? "").trim()`))
	if err != nil {
		p.fail("reading "+sel, err)
	}
	return s
}

func (p *page) screenshot(path string) {
	p.t.Helper()
	// a deadline for progress, not a speed: a full-page capture beside
	// CI's QEMU tests once took over 10 s
	ctx, cancel := context.WithTimeout(p.ctx, time.Minute)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
}

// shoot saves a screenshot named after what it shows ("" for the main one)
// in the test's directory and beside sharedScreenshot.
func (p *page) shoot(what string) {
	p.t.Helper()
	name, shared := "dashboard.png", sharedScreenshot
	if what != "" {
		name = what + ".png"
		shared = strings.TrimSuffix(sharedScreenshot, ".png") + "-" + what + ".png"
	}
	p.screenshot(filepath.Join(p.dir, name))
	p.screenshot(shared)
	if what == "" {
		p.t.Logf("screenshot: %s (copy in %s)", filepath.Join(p.dir, name), shared)
	}
}

func (p *page) fail(what string, err error) {
	p.t.Helper()
	shot := filepath.Join(os.TempDir(), "vpool-dashboard-failure.png")
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	if png, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil && os.WriteFile(shot, png, 0o644) == nil {
		p.t.Logf("screenshot of the failure: %s", shot)
	}
	p.t.Logf("browser console:\n%s", p.console)
	p.t.Fatalf("%s: %v", what, err)
}

// setValue sets an input's value as typing would (an input event
// follows). chromedp.SetValue cannot set the empty string.
func setValue(sel, value string) chromedp.Action[chromedp.Void] {
	js := `((el, v) => { el.value = v; el.dispatchEvent(new Event("input", {bubbles: true})); return el.value === v; })(document.querySelector(` +
		strconv.Quote(sel) + `), ` + strconv.Quote(value) + `)`
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		ok, err := chromedp.Evaluate[bool](js)(ctx, t)
		if err == nil && !ok {
			err = fmt.Errorf("%s did not take the value %q", sel, value)
		}
		return chromedp.Void{}, err
	}
}

// vmRow is the CSS selector of a VM's row in the VMs table.
func vmRow(name string) string { return `#vms-table tr[data-vm="` + name + `"]` }
