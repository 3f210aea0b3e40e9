package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// progressBar shows the progress of long work on stderr: on a terminal
// one line redrawn in place; elsewhere (a pipe, a log) a line when the
// text's step changes and at most one every few seconds for the rest, so
// that logs stay readable.
type progressBar struct {
	w     io.Writer
	tty   bool
	now   func() time.Time
	drawn bool
	last  time.Time
	step  string
}

// newProgress returns a progressBar on w, redrawing in place when w is a
// terminal.
func newProgressBar(w io.Writer, now func() time.Time) *progressBar {
	return &progressBar{w: w, tty: isTerminal(w), now: now}
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// show draws line; step names the stage it belongs to (a new step is
// always printed).
func (p *progressBar) show(step, line string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.drawn = true
		return
	}
	now := p.now()
	if step == p.step && now.Sub(p.last) < 5*time.Second {
		return
	}
	p.step, p.last = step, now
	fmt.Fprintln(p.w, line)
}

// done ends the redrawn line.
func (p *progressBar) done() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// bar renders a fraction as [=====     ] with width cells.
func bar(frac float64, width int) string {
	frac = min(max(frac, 0), 1)
	n := int(frac * float64(width))
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
}

// waitOpts are the flags of a long operation: it waits by default;
// --no-wait returns once the operation is asked for. The old --wait is
// kept, hidden, as a no-op so that scripts written for it keep working
// (--wait=false is --no-wait).
type waitOpts struct {
	noWait, wait bool
}

func (o *waitOpts) flags(cmd *cobra.Command, until string) {
	cmd.Flags().BoolVar(&o.noWait, "no-wait", false, "return at once instead of waiting until "+until)
	cmd.Flags().BoolVar(&o.wait, "wait", true, "wait (the default)")
	_ = cmd.Flags().MarkHidden("wait")
}

// enabled says whether to wait.
func (o *waitOpts) enabled() bool { return o.wait && !o.noWait }
