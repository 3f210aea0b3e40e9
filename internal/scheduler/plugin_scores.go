package scheduler

// Binpack prefers the most allocated hosts (CPU and memory after the VM,
// averaged): fewer hosts in use, room kept whole for big VMs.
type Binpack struct{}

// Spread prefers the least allocated hosts: load and failure domains
// spread out.
type Spread struct{}

// Balance prefers hosts whose CPU and memory allocation stay even, so that
// neither resource is stranded.
type Balance struct{}

var (
	_ Scorer = (*Binpack)(nil)
	_ Scorer = (*Spread)(nil)
	_ Scorer = (*Balance)(nil)
)

// Name implements Plugin.
func (Binpack) Name() string { return "binpack" }

// Score implements Scorer.
func (Binpack) Score(c *Cycle, h int) float64 {
	cpu, mem := c.fractions(h)
	return (cpu + mem) / 2
}

// Name implements Plugin.
func (Spread) Name() string { return "spread" }

// Score implements Scorer.
func (Spread) Score(c *Cycle, h int) float64 {
	cpu, mem := c.fractions(h)
	return 1 - (cpu+mem)/2
}

// Name implements Plugin.
func (Balance) Name() string { return "balance" }

// Score implements Scorer.
func (Balance) Score(c *Cycle, h int) float64 {
	cpu, mem := c.fractions(h)
	if cpu > mem {
		return 1 - (cpu - mem)
	}
	return 1 - (mem - cpu)
}
