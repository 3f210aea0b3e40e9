package scheduler

// Labels is data locality. Required labels are a hard filter: a VM that
// requires region=eu never lands on a host without that label. Preferred
// labels are a score: the share of them the host carries.
//
// Required selectors are answered with one AND of per-label host bitsets
// per decision; the per-host test is a single bit.
type Labels struct{}

var (
	_ Filter = (*Labels)(nil)
	_ Scorer = (*Labels)(nil)
)

const reasonMissingLabels uint8 = 0

// Name implements Plugin.
func (Labels) Name() string { return "labels" }

// Filter implements Filter.
func (Labels) Filter(c *Cycle, h int) Status {
	if len(c.d.required) > 0 && !c.required.has(int32(h)) {
		return reject(reasonMissingLabels, 0)
	}
	return ok
}

// Explain implements Filter.
func (Labels) Explain(c *Cycle, _ uint8, _ int64) string {
	return "missing required labels " + selector(c.d.required)
}

// Score implements Scorer.
func (Labels) Score(c *Cycle, h int) float64 {
	if len(c.preferred) == 0 {
		return 0
	}
	n := 0
	for _, b := range c.preferred {
		if b.has(int32(h)) {
			n++
		}
	}
	return float64(n) / float64(len(c.preferred))
}
