package scheduler

import "math"

// Code is a filter's verdict on one host.
type Code uint8

// Codes. Unschedulable is the normal "this host does not fit this VM";
// Error means the plugin itself broke and aborts the decision.
const (
	Success Code = iota
	Unschedulable
	Error
)

// Status is what a filter returns for one host. It carries no text: the
// engine counts rejections per (filter, Reason) and keeps the largest
// Value of each, and the filter turns that into words once per decision
// (Explain). This is what keeps a 10,000-host decision free of string
// formatting.
type Status struct {
	Code   Code
	Reason uint8 // plugin-defined, < maxReasons
	Value  int64 // aggregated by max, e.g. the free memory of the host
	Err    error // with Code Error
}

// OK is the Success status.
var ok = Status{}

func reject(reason uint8, value int64) Status {
	return Status{Code: Unschedulable, Reason: reason, Value: value}
}

// Plugin is anything registered by name.
type Plugin interface {
	Name() string
}

// Filter rejects hosts a VM cannot use. Filter is called once per host
// examined and must not allocate; Explain is called once per decision for
// each reason that rejected at least one host.
type Filter interface {
	Plugin
	Filter(c *Cycle, host int) Status
	// Explain words a reason, e.g. "insufficient memory (needs 8GiB, most
	// free 6GiB)", given the largest Value seen with it.
	Explain(c *Cycle, reason uint8, most int64) string
}

// Scorer ranks the feasible hosts. Score returns a number in [0, 1]; the
// engine multiplies it by the plugin's weight (Policy.Weights[name]).
type Scorer interface {
	Plugin
	Score(c *Cycle, host int) float64
}

// Limits of the tallies kept per decision.
const (
	maxFilters = 16
	maxReasons = 8
)

type tally struct {
	count int32
	most  int64
}

func (t *tally) add(n int32, v int64) {
	if t.count == 0 || v > t.most {
		t.most = v
	}
	t.count += n
}

type scored struct {
	host  int32
	score float64
}

// Cycle is the per-decision state handed to plugins: the snapshot and the
// compiled request. It is reused between decisions.
type Cycle struct {
	snap      *Snapshot
	d         demand
	required  bitset   // hosts having every required label; nil: no requirement
	reqCount  int      // schedulable hosts in required
	preferred []bitset // one per preferred label
	groupLive bool     // the VM's group has members on schedulable hosts

	tally    [maxFilters][maxReasons]tally
	feasible []scored
	examined int
	visit    []uint32 // per host: epoch when examined (only with preVisit)
	epoch    uint32
	preVisit bool
	scratch  []int32
	err      error

	scarceDone           bool
	scarceSet, scarceBuf bitset
}

// Snapshot is the cluster state being decided on.
func (c *Cycle) Snapshot() *Snapshot { return c.snap }

func (c *Cycle) reset(snap *Snapshot) {
	c.snap = snap
	c.d = demand{}
	c.required = c.required[:0]
	c.reqCount = 0
	c.preferred = c.preferred[:0]
	c.groupLive = false
	c.tally = [maxFilters][maxReasons]tally{}
	c.feasible = c.feasible[:0]
	c.examined = 0
	c.preVisit = false
	c.err = nil
	c.scarceDone = false
	if len(c.visit) < len(snap.hosts) {
		c.visit = make([]uint32, len(snap.hosts))
		c.epoch = 0
	}
	c.nextEpoch()
}

func (c *Cycle) nextEpoch() {
	c.epoch++
	if c.epoch == math.MaxUint32 {
		clear(c.visit)
		c.epoch = 1
	}
}

// members is the number of the request's group members on host h.
func (c *Cycle) members(h int) int32 {
	if c.d.grp < 0 {
		return 0
	}
	return c.snap.groupHosts[c.d.grp][int32(h)]
}

// fractions returns the CPU and memory allocated on h, as fractions of
// allocatable, if the VM were placed there.
func (c *Cycle) fractions(h int) (cpu, mem float64) {
	r := &c.snap.hosts[h]
	if r.cpuLimit > 0 {
		cpu = float64(r.cpuUsed+c.d.cpu) / float64(r.cpuLimit)
	}
	if r.memLimit > 0 {
		mem = float64(r.memUsed+c.d.mem) / float64(r.memLimit)
	}
	return min(cpu, 1), min(mem, 1)
}
