package scheduler

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vpool/vpool/internal/model"
)

// conclude picks the best feasible host and writes the explanation: one
// FilterOut per (filter, reason) that rejected hosts, the top candidates
// with their score parts, and a one-line summary. Strings are formatted
// here, once per decision, never per host.
func (s *Scheduler) conclude(c *Cycle) Decision {
	snap := c.snap
	e := &model.Explanation{Hosts: len(snap.hosts)}
	rejected := 0
	for i, f := range s.filters {
		for r := range c.tally[i] {
			t := &c.tally[i][r]
			if t.count == 0 {
				continue
			}
			rejected += int(t.count)
			e.Filters = append(e.Filters, model.FilterOut{Filter: f.Name(), Rejected: int(t.count), Reason: f.Explain(c, uint8(r), t.most)})
		}
	}
	d := Decision{Explanation: e, host: -1}
	if c.err != nil {
		d.Err = c.err
		e.Summary = "error: " + c.err.Error()
		return d
	}
	top := s.top(c.feasible)
	for _, sc := range top {
		cand := model.Candidate{Host: snap.names[sc.host], Score: round3(sc.score), Parts: make(map[string]float64, len(s.scorers))}
		for i, p := range s.scorers {
			cand.Parts[p.Name()] = round3(s.weights[i] * p.Score(c, int(sc.host)))
		}
		e.Candidates = append(e.Candidates, cand)
	}
	if len(top) == 0 {
		e.Summary = notFitSummary(e.Filters)
		return d
	}
	d.host = top[0].host
	d.Host = snap.names[d.host]
	e.Chosen = d.Host
	unexamined := len(snap.hosts) - rejected - len(c.feasible)
	e.Summary = fmt.Sprintf("placed on %s (score %.3f): %d feasible, %d rejected, %d not examined of %d hosts",
		d.Host, top[0].score, len(c.feasible), rejected, unexamined, len(snap.hosts))
	return d
}

// top returns the best topN of the feasible hosts, best first; ties go to
// the host examined first (the best fit in index order).
func (s *Scheduler) top(feasible []scored) []scored {
	var best [8]scored
	n := min(s.topN, len(best))
	out := best[:0]
	for _, f := range feasible {
		i := len(out)
		for i > 0 && f.score > out[i-1].score {
			i--
		}
		if i >= n {
			continue
		}
		if len(out) < n {
			out = append(out, scored{})
		}
		copy(out[i+1:], out[i:])
		out[i] = f
	}
	return append([]scored(nil), out...)
}

func round3(v float64) float64 {
	if v < 0 {
		return -round3(-v)
	}
	return float64(int64(v*1000+0.5)) / 1000
}

// notFitSummary says why a VM fits nowhere, biggest reasons first:
// "does not fit: 412 hosts: insufficient memory (needs 8GiB, most free
// 6GiB); 3 hosts: down".
func notFitSummary(filters []model.FilterOut) string {
	if len(filters) == 0 {
		return "does not fit: no hosts"
	}
	sorted := append([]model.FilterOut(nil), filters...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Rejected > sorted[j].Rejected })
	parts := make([]string, 0, 4)
	for i, f := range sorted {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("and %d more reasons", len(sorted)-3))
			break
		}
		parts = append(parts, FormatFilterOut(f))
	}
	return "does not fit: " + strings.Join(parts, "; ")
}

// FormatFilterOut renders one filter's rejections the way people read
// them: "412 hosts: insufficient memory (needs 8GiB, most free 6GiB)".
func FormatFilterOut(f model.FilterOut) string {
	unit := "hosts"
	if f.Rejected == 1 {
		unit = "host"
	}
	return fmt.Sprintf("%d %s: %s", f.Rejected, unit, f.Reason)
}
