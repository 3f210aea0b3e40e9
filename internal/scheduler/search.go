package scheduler

import (
	"fmt"
	"slices"
)

// search examines hosts for the cycle's request and leaves the feasible
// ones, scored, in c.feasible and the rejections in c.tally.
//
// Unschedulable hosts are counted per state without a visit. Then one of
// four walks runs, the narrowest that is exact:
//   - a pinned host: just that host;
//   - hard affinity with live members: the hosts of the group;
//   - required labels matched by few hosts: the label bitset;
//   - otherwise the free-capacity index, from the first bucket that can
//     hold the VM upwards (binpack: best fit) or from the top down
//     (spread), skipping the too-full buckets wholesale, and stopping
//     once enough feasible hosts were found.
//
// Hosts left out by a narrow walk are counted under the filter that made
// the walk narrow.
func (s *Scheduler) search(c *Cycle, exhaustive bool) {
	snap := c.snap
	s.tallyStates(c)
	schedulable := int32(snap.index.size)
	switch {
	case s.slotPin >= 0 && c.d.pin != noPin:
		if c.d.pin == unknownID {
			c.tally[s.slotPin][reasonPinMissing].add(schedulable, 0)
			return
		}
		in := int32(0)
		if snap.schedulable.has(c.d.pin) {
			in = 1
			s.examine(c, c.d.pin)
		}
		c.tally[s.slotPin][reasonNotPinned].add(schedulable-in, 0)
	case s.slotAffinity >= 0 && c.d.affinity == affHard && c.groupLive:
		in := int32(0)
		for _, h := range c.groupHosts() {
			if snap.schedulable.has(h) {
				in++
				s.examine(c, h)
			}
		}
		c.tally[s.slotAffinity][reasonGroupElsewhere].add(schedulable-in, 0)
	case s.slotLabels >= 0 && len(c.d.required) > 0 && c.reqCount*32 < int(schedulable):
		for h := c.required.next(0); h >= 0; h = c.required.next(h + 1) {
			s.examine(c, int32(h))
		}
		c.tally[s.slotLabels][reasonMissingLabels].add(schedulable-int32(c.reqCount), 0)
	default:
		start := snap.index.bucketFor(min(c.d.mem, int64(float64(c.d.cpu)*snap.minMemPerCPU)))
		s.walkDefault(c, start, exhaustive)
		if len(c.feasible) == 0 && c.err == nil && start > 0 {
			// Fits nowhere: look at every host, so that the explanation
			// of a pending VM gives each host its exact reason.
			c.tally = [maxFilters][maxReasons]tally{}
			c.examined, c.preVisit = 0, false
			c.nextEpoch()
			s.tallyStates(c)
			s.walkDefault(c, 0, true)
		}
	}
	if c.err != nil {
		c.feasible = c.feasible[:0]
	}
}

// tallyStates counts the unschedulable hosts per state, without a visit.
func (s *Scheduler) tallyStates(c *Cycle) {
	for reason, n := range c.snap.notSched {
		if n > 0 {
			c.tally[s.slotState][reason].add(n, 0)
		}
	}
}

func (s *Scheduler) walkDefault(c *Cycle, start int, exhaustive bool) {
	if s.slotAffinity >= 0 && c.d.affinity == affSoft && c.d.grp >= 0 {
		s.examineGroup(c, start)
	}
	s.walkIndex(c, start, exhaustive)
}

// examineGroup looks at (up to 64) hosts of a soft-affinity group before
// the index walk, so that the preference is not lost to early stopping.
// Only hosts the walk would reach (bucket ≥ start) are taken, so that no
// host is counted twice.
func (s *Scheduler) examineGroup(c *Cycle, start int) {
	c.preVisit = true
	n := 0
	for _, h := range c.groupHosts() {
		if n == 64 {
			break
		}
		if b := c.snap.index.bucketOf[h]; b >= 0 && int(b) >= start {
			c.visit[h] = c.epoch
			s.examine(c, h)
			n++
		}
	}
}

func (s *Scheduler) walkIndex(c *Cycle, start int, exhaustive bool) {
	x := c.snap.index
	// Every host below start is too full in memory or CPU for the VM.
	if skipped := x.below(start); skipped > 0 {
		c.tally[s.slotFit][reasonCapacity].add(int32(skipped), 0)
	}
	done := func() bool {
		if c.err != nil {
			return true
		}
		if exhaustive || len(c.feasible) == 0 {
			return false
		}
		return len(c.feasible) >= s.feasibleTarget || c.examined >= s.maxExamine
	}
	visit := func(b int) bool {
		for _, h := range x.buckets[b] {
			if c.preVisit && c.visit[h] == c.epoch {
				continue
			}
			s.examine(c, h)
			if done() {
				return true
			}
		}
		return false
	}
	if s.spread {
		for b := x.nonEmpty.prev(len(x.buckets) - 1); b >= start; b = x.nonEmpty.prev(b - 1) {
			if visit(b) {
				return
			}
		}
		return
	}
	for b := x.nonEmpty.next(start); b >= 0; b = x.nonEmpty.next(b + 1) {
		if visit(b) {
			return
		}
	}
}

// examine runs the filters on host h, then the scorers if it passed.
func (s *Scheduler) examine(c *Cycle, h int32) {
	c.examined++
	for i, f := range s.filters {
		st := f.Filter(c, int(h))
		switch st.Code {
		case Success:
			continue
		case Error:
			c.err = fmt.Errorf("%w: %s on host %q: %w", ErrPlugin, f.Name(), c.snap.names[h], st.Err)
			return
		}
		c.tally[i][st.Reason%maxReasons].add(1, st.Value)
		return
	}
	var total float64
	for i, sc := range s.scorers {
		total += s.weights[i] * sc.Score(c, int(h))
	}
	c.feasible = append(c.feasible, scored{host: h, score: total})
}

// groupHosts lists the hosts of the request's group in index order, so
// that decisions do not depend on map iteration order.
func (c *Cycle) groupHosts() []int32 {
	c.scratch = c.scratch[:0]
	for h := range c.snap.groupHosts[c.d.grp] {
		c.scratch = append(c.scratch, h)
	}
	slices.Sort(c.scratch)
	return c.scratch
}
