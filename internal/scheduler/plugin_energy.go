package scheduler

// Energy prefers the placement that adds the least power. With a linear
// power model (idle power plus a part proportional to load, both growing
// with the host's size), the load part of a VM costs about the same
// anywhere, so what differs is the idle power of waking an empty host:
// hosts already running VMs score 1; an empty host scores less, the
// bigger it is (0.5 × smallest cores / its cores). Powered-off (standby)
// hosts never reach scoring: HostState filters them.
type Energy struct{}

var _ Scorer = (*Energy)(nil)

// Name implements Plugin.
func (Energy) Name() string { return "energy" }

// Score implements Scorer.
func (Energy) Score(c *Cycle, h int) float64 {
	r := &c.snap.hosts[h]
	if r.vms > 0 {
		return 1
	}
	if r.cores <= 0 {
		return 0.5
	}
	return 0.5 * float64(c.snap.minCores) / float64(r.cores)
}
