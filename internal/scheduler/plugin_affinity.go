package scheduler

import "fmt"

// Affinity relates the VMs of one affinity group (scoped to the project):
// hard affinity puts them on one host, hard anti-affinity on different
// hosts, MaxPerHost caps members per host; the soft kinds are scores.
//
// Hard affinity binds only while the group has a member on a schedulable
// host: a group whose hosts all died may be restarted anywhere (together,
// when placed as a batch).
type Affinity struct{}

var (
	_ Filter = (*Affinity)(nil)
	_ Scorer = (*Affinity)(nil)
)

const (
	reasonGroupElsewhere uint8 = iota
	reasonGroupHere
	reasonGroupFull
)

// Name implements Plugin.
func (Affinity) Name() string { return "affinity" }

// Filter implements Filter.
func (Affinity) Filter(c *Cycle, h int) Status {
	if c.d.grp < 0 {
		return ok
	}
	n := c.members(h)
	switch {
	case c.d.affinity == affHard && c.groupLive && n == 0:
		return reject(reasonGroupElsewhere, 0)
	case c.d.affinity == affAnti && n > 0:
		return reject(reasonGroupHere, int64(n))
	case c.d.maxPerHost > 0 && n >= c.d.maxPerHost:
		return reject(reasonGroupFull, int64(n))
	}
	return ok
}

// Explain implements Filter.
func (Affinity) Explain(c *Cycle, reason uint8, _ int64) string {
	switch reason {
	case reasonGroupElsewhere:
		return fmt.Sprintf("affinity group %q runs on other hosts", c.d.group)
	case reasonGroupHere:
		return fmt.Sprintf("already runs a member of anti-affinity group %q", c.d.group)
	}
	return fmt.Sprintf("already runs %d members of group %q (max per host)", c.d.maxPerHost, c.d.group)
}

// Score implements Scorer: soft affinity prefers hosts with members, soft
// anti-affinity hosts with few.
func (Affinity) Score(c *Cycle, h int) float64 {
	switch c.d.affinity {
	case affSoft:
		if c.members(h) > 0 {
			return 1
		}
	case affSoftAnti:
		return 1 / float64(1+c.members(h))
	}
	return 0
}
