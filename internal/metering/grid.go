package metering

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Grid says how much CO2 a kWh costs where and when: a time series per
// site (a file from the grid operator or a service such as Electricity
// Maps, read by the server), else the site's setting, else the cluster's.
type Grid struct {
	// PUE is facility power / IT power (≥ 1; 0 counts as 1).
	PUE float64
	// Default is the cluster's intensity (g CO2e per kWh).
	Default float64
	// Sites are intensities per site (model.SiteLabel).
	Sites map[string]float64
	// Series holds points per site ("" for every site), each valid from
	// its time until the next point of its site.
	Series map[string][]Point
}

// Point is a grid intensity from At on.
type Point struct {
	At      time.Time
	GPerKWh float64
}

func (g Grid) pue() float64 {
	if g.PUE < 1 {
		return 1
	}
	return g.PUE
}

// Intensity is the grid intensity at site and time t.
func (g Grid) Intensity(site string, t time.Time) float64 {
	for _, s := range []string{site, ""} {
		if v, ok := lookup(g.Series[s], t); ok {
			return v
		}
		if s == site {
			if v, ok := g.Sites[site]; ok && site != "" {
				return v
			}
		}
	}
	return g.Default
}

// lookup finds the point in force at t (series sorted by time).
func lookup(ps []Point, t time.Time) (float64, bool) {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].At.After(t) })
	if i == 0 {
		return 0, false
	}
	return ps[i-1].GPerKWh, true
}

// MaxSeriesPoints bounds a series file (a year of 5-minute points for a
// handful of sites).
const MaxSeriesPoints = 1 << 20

// ParseSeries reads a grid-intensity file: CSV lines "TIME,SITE,G_PER_KWH"
// (RFC 3339 time; an empty site means every site), '#' comments and a
// header line allowed.
func ParseSeries(r io.Reader) (map[string][]Point, error) {
	out := map[string][]Point{}
	sc := bufio.NewScanner(r)
	n, line := 0, 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Split(text, ",")
		if len(f) != 3 {
			return nil, fmt.Errorf("metering: grid series line %d: want TIME,SITE,G_PER_KWH", line)
		}
		at, err := time.Parse(time.RFC3339, strings.TrimSpace(f[0]))
		if err != nil {
			if line == 1 {
				continue // a header
			}
			return nil, fmt.Errorf("metering: grid series line %d: %w", line, err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(f[2]), 64)
		if err != nil || v < 0 || v > 5000 || math.IsNaN(v) {
			return nil, fmt.Errorf("metering: grid series line %d: %q is not an intensity from 0 to 5000 g/kWh", line, f[2])
		}
		if n++; n > MaxSeriesPoints {
			return nil, fmt.Errorf("metering: grid series: more than %d points", MaxSeriesPoints)
		}
		site := strings.TrimSpace(f[1])
		out[site] = append(out[site], Point{At: at.UTC(), GPerKWh: v})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metering: grid series: %w", err)
	}
	for _, ps := range out {
		sort.SliceStable(ps, func(i, j int) bool { return ps[i].At.Before(ps[j].At) })
	}
	return out, nil
}
