package simulate

import (
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// ErrNoSeries reports a result without per-step samples (run with
// Config.Series).
var ErrNoSeries = errors.New("simulate: result has no series (set Config.Series)")

// WriteSVG draws two charts, active hosts and data-centre power over
// time, for one or more results (one line per result) into a single SVG.
func WriteSVG(w io.Writer, title string, results ...*Result) error {
	for _, r := range results {
		if len(r.Series) == 0 {
			return ErrNoSeries
		}
	}
	const width, chartH, pad = 900.0, 260.0, 50.0
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}
	var b strings.Builder
	total := 2*chartH + 3*pad + 20
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, total)
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="15">%s</text>`+"\n", pad, html.EscapeString(title))
	charts := []struct {
		name string
		val  func(Sample) float64
	}{
		{"active hosts", func(s Sample) float64 { return float64(s.ActiveHosts) }},
		{"power (kW)", func(s Sample) float64 { return s.PowerW / 1000 }},
	}
	for ci, c := range charts {
		top := 30 + float64(ci)*(chartH+pad)
		var tMax, yMax float64
		for _, r := range results {
			for _, s := range r.Series {
				tMax = math.Max(tMax, s.T)
				yMax = math.Max(yMax, c.val(s))
			}
		}
		if yMax == 0 {
			yMax = 1
		}
		if tMax == 0 {
			tMax = 1
		}
		x0, x1 := pad, width-pad
		y0, y1 := top+chartH, top+10
		fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#999"/>`+"\n", x0, y1, x1-x0, y0-y1)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f">%s (max %.1f)</text>`+"\n", x0, y1-2, c.name, yMax)
		for h := 0.0; h <= tMax/3600; h += 6 {
			x := x0 + (x1-x0)*h*3600/tMax
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%gh</text>`+"\n", x, y0+14, h)
		}
		for ri, r := range results {
			var pts strings.Builder
			for _, s := range r.Series {
				x := x0 + (x1-x0)*s.T/tMax
				y := y0 - (y0-y1)*c.val(s)/yMax
				fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
			}
			col := colors[ri%len(colors)]
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", col, strings.TrimSpace(pts.String()))
			if ci == 0 {
				fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`+"\n", x1-150, y1+14+14*float64(ri), col, html.EscapeString(r.Policy))
			}
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
