package browser

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vpool/vpool/internal/testenv"
)

// chromiumPath is Debian's Chromium; VPOOL_CHROMIUM names another binary.
const chromiumPath = "/usr/bin/chromium"

// requireChromium returns the browser to run, or skips the test with the
// reason — failing instead under VPOOL_REQUIRE_HEAVY=1 (CI, root), where
// nothing heavy may be skipped.
func requireChromium(t *testing.T) string {
	t.Helper()
	path := os.Getenv("VPOOL_CHROMIUM")
	if path == "" {
		path = chromiumPath
	}
	return testenv.MustHaveTool(t, path, "apt-get install chromium, or set VPOOL_CHROMIUM; the browser test")
}

// console collects what the page writes to its console.
type console struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

// problems are uncaught exceptions and console.error calls; failed
// network requests (the browser's own log, e.g. a 400 the page expected)
// are not.
func (c *console) problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source == "") {
			out = append(out, m.String())
		}
	}
	return out
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, m := range c.msgs {
		b.WriteString(m.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// startBrowser launches headless Chromium with a fresh profile for the
// length of the test and returns a tab's context and its console.
func startBrowser(t *testing.T, exe string) (context.Context, *console) {
	t.Helper()
	profile, err := os.MkdirTemp("", "vpool-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1440, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
		// Chromium's helpers may still be writing into the profile for a
		// moment after the browser exits.
		for range 20 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	con := &console{}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			con.mu.Lock()
			con.msgs = append(con.msgs, m)
			con.mu.Unlock()
		}
	}()
	return ctx, con
}
