package simulate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/trace"
)

// ErrConfig reports an unusable configuration.
var ErrConfig = errors.New("simulate: invalid configuration")

// Config describes one replay.
type Config struct {
	Setup  Setup
	Policy string // see balance.Policies; "" means vpool
	Hosts  int    // 0 means DefaultHosts
	Seed   uint64 // for randomised policies
	// Progress, when set, is called after every step.
	Progress func(step, steps int)
	// Now, when set, measures wall time for Result.WallS.
	Now func() time.Time
	// Series keeps per-step samples for charts.
	Series bool
	// Planner, when set, replaces the planner named by Policy (Policy
	// then only labels the result).
	Planner balance.Planner
	// CPURatio, when set, is the simulated cluster's CPU allocation ratio
	// (the server's default is 4: ServerPolicy). It bounds the initial
	// placement and every move of the policies the server's scheduler
	// places; the literature's policies ignore it.
	CPURatio float64
	// MemoryRatio, when set, is the simulated cluster's memory allocation
	// ratio (the server's default is 1: memory is never overcommitted).
	MemoryRatio float64
	// Cluster, when set, is the data centre the server's scheduler sees
	// instead of NewCluster(tr, Hosts): NewCluster's result with labels,
	// placement rules or the policy changed. It must describe tr's VMs
	// on Hosts hosts. Run does not modify it.
	Cluster *Cluster
}

// Sample is the data centre's state after one step.
type Sample struct {
	T           float64 `json:"t"`
	ActiveHosts int     `json:"active_hosts"`
	PowerW      float64 `json:"power_w"`
}

// Result holds the metrics of one replay. SLATAH, PDM and SLAV are
// fractions (0.0000432), not percents.
type Result struct {
	Policy          string  `json:"policy"`
	Setup           Setup   `json:"setup"`
	VMs             int     `json:"vms"`
	Hosts           int     `json:"hosts"`
	EnergyKWh       float64 `json:"energy_kwh"`
	SLATAH          float64 `json:"slatah"`
	PDM             float64 `json:"pdm"`
	SLAV            float64 `json:"slav"`
	ESV             float64 `json:"esv"`
	Migrations      int     `json:"migrations"`
	HostShutdowns   int     `json:"host_shutdowns"`
	MeanActiveHosts float64 `json:"mean_active_hosts"`
	WallS           float64 `json:"wall_s"`
	// Placement says how the VMs were placed at start: "scheduler" (the
	// server's internal/scheduler), or the literature's "pabfd" or
	// "first-fit".
	Placement string `json:"placement"`
	// CPURatio is the simulated cluster's CPU allocation ratio when the
	// server's scheduler placed the VMs and checked the moves (0 for the
	// literature's placements, which do not use it).
	CPURatio float64 `json:"cpu_ratio,omitempty"`
	// MemoryRatio is the same for memory.
	MemoryRatio float64  `json:"memory_ratio,omitempty"`
	Series      []Sample `json:"series,omitempty"`
}

// startOffset is CloudSim's minimum time between events: cloudlets are
// submitted at 0.1 s, so every step happens at k·interval + 0.1.
const startOffset = 0.1

type vmS struct {
	mips, mem float64
	cpu       []float64 // samples plus the last one repeated
	host      int       // where the VM runs (CloudSim's VM table)
	inMig     bool
	alive     bool
	req, reqT float64
	hist      [balance.HistoryLength]float64
	histN     int
	histT     float64
	h         history
}

type hostS struct {
	typ        HostType
	mips, pe   float64
	vms        []int
	migIn      []int
	util, prev float64 // MIPS now and at the previous update
	alloc      []float64
	h          history
	hasEntry   bool
	lastActive bool
}

type migration struct {
	vm, to int
	at     float64
}

type engine struct {
	cfg      Config
	interval float64
	limit    float64
	vms      []vmS
	hosts    []hostS
	planner  balance.Planner
	lastT    float64
	joules   float64
	migs     int
	pending  []migration
	hm       hostMetrics
	vmm      vmMetrics
	firstT   float64
	snap     balance.Snapshot
	res      Result
	clk      clock
	clkSet   bool
	names    []string
	tr       *trace.Trace
	// view is the cluster as the server holds it, when the server's
	// scheduler placed the VMs (nil for the literature's placements).
	view *serverView
}

// Run replays tr under cfg.
func Run(ctx context.Context, tr *trace.Trace, cfg Config) (*Result, error) {
	if err := tr.Validate(); err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	if cfg.Setup == "" {
		cfg.Setup = Literature
	}
	if _, err := ParseSetup(string(cfg.Setup)); err != nil {
		return nil, err
	}
	if cfg.Hosts == 0 {
		cfg.Hosts = DefaultHosts
	}
	if cfg.Hosts < 0 {
		return nil, fmt.Errorf("%w: %d hosts", ErrConfig, cfg.Hosts)
	}
	if cfg.Policy == "" {
		cfg.Policy = "vpool"
	}
	for _, r := range []struct {
		what string
		v    float64
	}{{"CPU", cfg.CPURatio}, {"memory", cfg.MemoryRatio}} {
		if r.v < 0 || math.IsNaN(r.v) || math.IsInf(r.v, 0) {
			return nil, fmt.Errorf("%w: %s ratio %v (want a positive number, or 0 for the server's default)", ErrConfig, r.what, r.v)
		}
	}
	if c := cfg.Cluster; c != nil && (len(c.Hosts) != cfg.Hosts || len(c.VMs) != len(tr.VMs)) {
		return nil, fmt.Errorf("%w: the cluster has %d hosts and %d VMs, the replay %d and %d",
			ErrConfig, len(c.Hosts), len(c.VMs), cfg.Hosts, len(tr.VMs))
	}
	planner := cfg.Planner
	if planner == nil {
		p, err := balance.NewPlanner(cfg.Policy, cfg.Seed)
		if err != nil {
			return nil, fmt.Errorf("simulate: %w", err)
		}
		planner = p
	}
	var start time.Time
	if cfg.Now != nil {
		start = cfg.Now()
	}
	e := newEngine(tr, cfg, planner)
	if err := e.place(); err != nil {
		return nil, err
	}
	if err := e.run(ctx); err != nil {
		return nil, err
	}
	r := e.result()
	if cfg.Now != nil {
		r.WallS = cfg.Now().Sub(start).Seconds()
	}
	return r, nil
}

func newEngine(tr *trace.Trace, cfg Config, planner balance.Planner) *engine {
	n := tr.Samples()
	e := &engine{cfg: cfg, interval: tr.Interval, limit: float64(n) * tr.Interval, planner: planner, tr: tr}
	e.vms = make([]vmS, len(tr.VMs))
	for i, v := range tr.VMs {
		t := vmTypeFor(i, len(tr.VMs))
		cpu := make([]float64, n+1)
		copy(cpu, v.CPU)
		for j := len(v.CPU); j <= n; j++ { // shorter series hold their last value
			if j > 0 {
				cpu[j] = cpu[j-1]
			}
		}
		e.vms[i] = vmS{mips: t.MIPS, mem: t.MemMB, cpu: cpu, host: -1, alive: true, reqT: math.NaN(), histT: 0}
		e.vms[i].h.onCommit = e.vmm.fold
	}
	e.hosts = make([]hostS, cfg.Hosts)
	for i := range e.hosts {
		t := hostTypeFor(i)
		e.hosts[i] = hostS{typ: t, mips: float64(t.Cores) * t.CoreMIPS, pe: t.CoreMIPS}
		e.hosts[i].h.onCommit = e.hm.fold
	}
	e.res = Result{Policy: cfg.Policy, Setup: cfg.Setup, VMs: len(tr.VMs), Hosts: cfg.Hosts}
	return e
}

// place puts every VM on a host at time zero. The literature's policies
// keep the literature's placements (PABFD; first fit for DVFS) so that
// the published figures are reproduced; every other policy places with
// the server's own scheduler (placeWithScheduler).
func (e *engine) place() error {
	var out []int
	switch p := e.planner.(type) {
	case nil:
		e.res.Placement = PlacementFirstFit
		out = balance.InitialPlacement(e.snapshot(true), balance.Threshold{Limit: 1}, true)
	case *balance.Literature:
		e.res.Placement = PlacementPABFD
		out = balance.InitialPlacement(e.snapshot(true), p.Det, false)
	default:
		e.res.Placement = PlacementScheduler
		return e.placeWithScheduler()
	}
	for v, hi := range out {
		if hi < 0 {
			return fmt.Errorf("%w: vm %d does not fit on %d hosts", ErrConfig, v, len(e.hosts))
		}
		e.settle(v, hi)
	}
	return nil
}

// placeWithScheduler places the VMs in trace order, one decision each,
// through internal/scheduler exactly as the server's scheduling
// controller does, on the data centre described in the server's terms
// (NewCluster).
func (e *engine) placeWithScheduler() error {
	view, err := newServerView(e.cluster())
	if err != nil {
		return err
	}
	e.view = view
	e.res.CPURatio, e.res.MemoryRatio = view.c.Policy.Ratios.CPU, view.c.Policy.Ratios.Memory
	for v := range e.vms {
		hi, why, err := view.place(v)
		if err != nil {
			return err
		}
		if hi < 0 {
			return fmt.Errorf("%w: vm %d fits none of %d hosts (scheduler CPUs of %d MIPS): %s",
				ErrConfig, v, len(e.hosts), view.c.MIPSPerCPU, why)
		}
		e.settle(v, hi)
	}
	return nil
}

// cluster is the data centre the server's scheduler sees: Config.Cluster
// (copied: the view writes the VMs' hosts) or NewCluster's, under
// Config.CPURatio when set.
func (e *engine) cluster() *Cluster {
	var c *Cluster
	if e.cfg.Cluster != nil {
		cp := *e.cfg.Cluster
		cp.Hosts = append([]model.Host(nil), cp.Hosts...)
		cp.VMs = append([]model.VM(nil), cp.VMs...)
		c = &cp
	} else {
		c = NewCluster(e.tr, len(e.hosts))
	}
	if e.cfg.CPURatio > 0 {
		c.Policy.Ratios.CPU = e.cfg.CPURatio
	}
	if e.cfg.MemoryRatio > 0 {
		c.Policy.Ratios.Memory = e.cfg.MemoryRatio
	}
	return c
}

// settle puts VM v on host hi at start.
func (e *engine) settle(v, hi int) {
	e.vms[v].host = hi
	e.hosts[hi].vms = append(e.hosts[hi].vms, v)
}

// snapshot fills the planner's view. At start every VM is unplaced and
// asks for its full capacity.
func (e *engine) snapshot(initial bool) *balance.Snapshot {
	s := &e.snap
	s.Interval = e.interval
	// The server's placement rules reach the planner through its
	// feasibility hook, exactly as the server's balancer passes them,
	// whenever the server's scheduler placed the VMs.
	s.Feasible = nil
	if e.view != nil && !initial {
		s.Feasible = e.view.hook()
	}
	// Memory counts in the literature setup only at the initial
	// placement (CloudSim's running VMs ask for none). On the server it
	// always counts, under the memory ratio: the server's balancer says
	// so in its snapshot, and its hook refuses moves past it anyway.
	s.MemoryCounts = initial || e.cfg.Setup == Realistic || e.view != nil
	memRatio := 1.0
	if e.view != nil {
		memRatio = e.view.c.Policy.Ratios.Memory
	}
	if cap(s.Hosts) < len(e.hosts) {
		s.Hosts = make([]balance.Host, len(e.hosts))
	}
	s.Hosts = s.Hosts[:len(e.hosts)]
	for i := range e.hosts {
		h := &e.hosts[i]
		s.Hosts[i] = balance.Host{
			Name: e.name(i), MIPS: h.mips, PEMIPS: h.pe, MemMB: h.typ.MemMB * memRatio,
			BandwidthMbps: h.typ.BandwidthMbps, MaxVMs: h.typ.MaxVMs, Power: h.typ.Power,
			Util: utilFrac(h.util, h.mips), VMs: h.vms,
		}
	}
	if cap(s.VMs) < len(e.vms) {
		s.VMs = make([]balance.VM, len(e.vms))
	}
	s.VMs = s.VMs[:len(e.vms)]
	for i := range e.vms {
		v := &e.vms[i]
		host := v.host
		if !v.alive {
			host = -1
		}
		s.VMs[i] = balance.VM{Host: host, MIPS: v.mips, MemMB: v.mem,
			Demand: v.req, History: v.hist[:v.histN], Migrating: v.inMig}
		if initial {
			s.VMs[i].Demand = v.mips
		}
	}
	return s
}

// utilFrac is HostDynamicWorkload.getUtilizationOfCpu.
func utilFrac(mips, total float64) float64 {
	u := mips / total
	if u > 1 && u < 1.01 {
		u = 1
	}
	return u
}

// clock holds what depends only on the time of an update.
type clock struct {
	t        float64
	exact    bool // t is a multiple of the interval
	idx      int  // sample index when exact
	t1, t2   int
	off      float64 // t - t1·interval
	histStep bool    // VM histories take a sample at t
}

func (e *engine) setClock(t float64) {
	if e.clk.t == t && e.clkSet {
		return
	}
	iv := e.interval
	c := clock{t: t}
	if math.Mod(t, iv) == 0 {
		c.exact = true
		c.idx = int(t) / int(iv)
	} else {
		c.t1 = int(math.Floor(t / iv))
		c.t2 = int(math.Ceil(t / iv))
		c.off = t - float64(c.t1)*iv
	}
	c.histStep = math.Mod(t-startOffset, iv) == 0
	e.clk, e.clkSet = c, true
}

// util is UtilizationModelPlanetLabInMemory.getUtilization at the
// current clock: samples at multiples of the interval, linear in between.
func (e *engine) util(v *vmS) float64 {
	c := &e.clk
	last := len(v.cpu) - 1
	if c.exact {
		return v.cpu[min(c.idx, last)]
	}
	t1, t2 := min(c.t1, last), min(c.t2, last)
	if t1 == t2 {
		return v.cpu[t1]
	}
	u1, u2 := v.cpu[t1], v.cpu[t2]
	delta := (u2 - u1) / (float64(t2-t1) * e.interval)
	return u1 + delta*c.off
}

// touch brings a VM's demand (and, on step boundaries, its history) to
// the current clock.
func (e *engine) touch(v *vmS) {
	t := e.clk.t
	if v.reqT == t {
		return
	}
	u := e.util(v)
	v.req = u * v.mips
	v.reqT = t
	if t > v.histT && e.clk.histStep {
		copy(v.hist[1:], v.hist[:balance.HistoryLength-1])
		v.hist[0] = u
		v.histN = min(v.histN+1, balance.HistoryLength)
		v.histT = t
	}
}

func (h *hostS) isMigIn(v int) bool {
	for _, x := range h.migIn {
		if x == v {
			return true
		}
	}
	return false
}

func (e *engine) name(i int) string {
	for len(e.names) <= i {
		e.names = append(e.names, fmt.Sprint(len(e.names)))
	}
	return e.names[i]
}
