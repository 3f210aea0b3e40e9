package scheduler

// Scarcity keeps special hosts for the VMs that need them. A label key
// carried by few hosts (under 1 in rareKeyShare, e.g. gpu=... on 2% of
// hosts, unlike rack or zone that every host has) marks a scarce host; a
// VM that does not require that key scores 0 there and 1 elsewhere, so it
// uses scarce hosts only when nothing else is among the candidates.
// Without it, binpack fills the GPU hosts with ordinary VMs and the GPU
// VMs arriving later find no room.
type Scarcity struct{}

var _ Scorer = (*Scarcity)(nil)

// rareKeyShare: a label key on fewer than 1/rareKeyShare of hosts is rare.
const rareKeyShare = 10

// Name implements Plugin.
func (Scarcity) Name() string { return "scarcity" }

// Score implements Scorer.
func (Scarcity) Score(c *Cycle, h int) float64 {
	if c.scarce().has(int32(h)) {
		return 0
	}
	return 1
}

// scarce returns the hosts carrying a rare label key the VM does not
// require.
func (c *Cycle) scarce() bitset {
	s := c.snap
	if !c.scarceDone {
		c.scarceDone = true
		c.scarceSet = s.rareAll
		for k := range c.d.required {
			if _, rare := s.rareKeys[k]; rare {
				c.scarceSet = c.scarceBuf[:0]
				for key, b := range s.rareKeys {
					if _, req := c.d.required[key]; !req {
						c.scarceSet = orInto(c.scarceSet, b)
					}
				}
				c.scarceBuf = c.scarceSet
				break
			}
		}
	}
	return c.scarceSet
}

func orInto(dst, b bitset) bitset {
	for len(dst) < len(b) {
		dst = append(dst, 0)
	}
	for i, w := range b {
		dst[i] |= w
	}
	return dst
}

// recountRare finds the rare label keys and their hosts.
func (s *Snapshot) recountRare() {
	keyHosts := map[string]int{}
	for _, l := range s.labels {
		for k := range l {
			keyHosts[k]++
		}
	}
	s.rareKeys = map[string]bitset{}
	s.rareAll = nil
	for k, n := range keyHosts {
		if n*rareKeyShare >= len(s.hosts) {
			continue
		}
		var b bitset
		for i, l := range s.labels {
			if _, has := l[k]; has {
				b.set(int32(i))
			}
		}
		s.rareKeys[k] = b
		s.rareAll = orInto(s.rareAll, b)
	}
}
