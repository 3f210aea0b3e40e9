package simulate

import (
	"fmt"
	"math"
	"strconv"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/trace"
)

// Project owns the simulated VMs in the server's vocabulary.
const Project = "sim"

// CoreLabelPrefix starts the label a host carries for every VM size its
// cores can run: "sim.vpool.io/core-mips-ge-2500=true" on a host whose
// cores deliver at least 2500 MIPS. A VM larger than the smallest core
// requires its own size's label, so the scheduler's labels filter keeps
// it off slower cores, as the literature's placement does.
const CoreLabelPrefix = "sim.vpool.io/core-mips-ge-"

// imageMiB is each VM's image on its host's storage: CloudSim's 2500 MB,
// which with the 1,000,000 MB of a literature host gives its 400 VMs.
const imageMiB = 2500

// Placement names how a run placed its VMs at start (Result.Placement).
const (
	PlacementScheduler = "scheduler" // internal/scheduler, as the server places
	PlacementPABFD     = "pabfd"     // the literature's power-aware best fit
	PlacementFirstFit  = "first-fit" // the literature's DVFS baseline
)

// Cluster is the simulated data centre in the server's vocabulary: the
// hosts, the cluster policy and the VMs as the scheduling controller reads
// them from the store. CPU is counted in units of MIPSPerCPU MIPS, so
// the scheduler's fit filter compares exactly the MIPS the literature's
// placement compares; memory is the VM type's, each VM stores one image.
type Cluster struct {
	Policy model.Policy
	// Hosts are in simulator order, which is also name order (the order
	// the controller lists them in).
	Hosts []model.Host
	// VMs are in trace order, not yet placed.
	VMs []model.VM
	// MIPSPerCPU is what one scheduler CPU stands for: the greatest
	// common divisor of every host's and VM type's MIPS (20 for the
	// literature's types).
	MIPSPerCPU int
}

// ServerPolicy is the cluster policy of the simulated server: the
// server's default (model.DefaultPolicy: binpack, the default weights,
// CPU ratio 4, memory and disk 1.0), so that a replay runs what a server
// with default settings does. The ratios matter twice: the initial
// placement holds each VM's full MIPS, memory and image under them, and
// every later move must fit under them (the balancer's feasibility
// hook), while the planners pack by measured demand. Config.CPURatio
// replays another CPU ratio.
func ServerPolicy() model.Policy { return model.DefaultPolicy() }

// NewCluster describes the data centre a replay of tr on hosts hosts
// starts from (0 hosts means DefaultHosts).
func NewCluster(tr *trace.Trace, hosts int) *Cluster {
	if hosts == 0 {
		hosts = DefaultHosts
	}
	n := len(tr.VMs)
	q := mipsUnit(hosts, n)
	c := &Cluster{Policy: ServerPolicy(), MIPSPerCPU: q}
	sizes := coreSizes(hosts, n)
	width := len(strconv.Itoa(max(hosts-1, 0)))
	c.Hosts = make([]model.Host, hosts)
	for i := range c.Hosts {
		t := hostTypeFor(i)
		maxVMs := t.MaxVMs
		if maxVMs == 0 {
			maxVMs = max(n, 1)
		}
		labels := map[string]string{}
		for _, m := range sizes {
			if t.CoreMIPS >= float64(m) {
				labels[CoreLabelPrefix+strconv.Itoa(m)] = "true"
			}
		}
		c.Hosts[i] = model.Host{
			Meta:   model.Meta{Name: fmt.Sprintf("host-%0*d", width, i)},
			Labels: labels,
			Capacity: model.Resources{
				CPUs:   int(math.Round(float64(t.Cores)*t.CoreMIPS)) / q,
				Memory: model.Bytes(t.MemMB) * model.MiB,
				Disk:   model.Bytes(maxVMs) * imageMiB * model.MiB,
			},
			State: model.HostReady, Driver: "sim", Accel: "sim",
		}
	}
	vwidth := len(strconv.Itoa(max(n-1, 0)))
	c.VMs = make([]model.VM, n)
	for i := range c.VMs {
		t := vmTypeFor(i, n)
		spec := model.VMSpec{
			VCPUs:  int(math.Round(t.MIPS)) / q,
			Memory: model.Bytes(t.MemMB) * model.MiB,
			Disks:  []model.Disk{{Name: "root", Size: imageMiB * model.MiB}},
			Power:  model.PowerRunning,
		}
		if m := int(math.Round(t.MIPS)); needsCoreLabel(m, sizes) {
			spec.Placement.RequiredLabels = map[string]string{CoreLabelPrefix + strconv.Itoa(m): "true"}
		}
		c.VMs[i] = model.VM{Meta: model.Meta{Project: Project, Name: fmt.Sprintf("vm-%0*d", vwidth, i)}, Spec: spec}
	}
	return c
}

// hostTypeFor is the type of host i: the literature's types alternate.
func hostTypeFor(i int) HostType { return LiteratureHostTypes[i%len(LiteratureHostTypes)] }

// mipsUnit is the greatest common divisor of the MIPS of every host type
// in use (all cores) and every VM type in use.
func mipsUnit(hosts, vms int) int {
	g := 0
	for i := 0; i < min(hosts, len(LiteratureHostTypes)); i++ {
		t := hostTypeFor(i)
		g = gcd(g, int(math.Round(float64(t.Cores)*t.CoreMIPS)))
	}
	for i := 0; i < vms; i++ {
		g = gcd(g, int(math.Round(vmTypeFor(i, vms).MIPS)))
	}
	return max(g, 1)
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// coreSizes lists the VM sizes (MIPS) in use that exceed the slowest core
// in use: only those need a core label.
func coreSizes(hosts, vms int) []int {
	slowest := math.Inf(1)
	for i := 0; i < min(hosts, len(LiteratureHostTypes)); i++ {
		slowest = math.Min(slowest, hostTypeFor(i).CoreMIPS)
	}
	var out []int
	seen := map[int]bool{}
	for i := 0; i < vms; i++ {
		m := int(math.Round(vmTypeFor(i, vms).MIPS))
		if float64(m) > slowest && !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out
}

func needsCoreLabel(m int, sizes []int) bool {
	for _, s := range sizes {
		if s == m {
			return true
		}
	}
	return false
}

// serverView is the cluster as the server would hold it while the replay
// runs: the VM records (their Status.Host), one allocation record per
// host (what the store keeps) and the scheduler's snapshot over them,
// kept current the way the scheduling controller keeps its own
// (SetAllocation after every commit).
//
// It places the VMs at start and follows every later move: a migrating
// VM holds capacity on its target from the start of its copy (as the
// gate's hold does) and stays on its source's record until it arrives.
// hook gives the balancer the scheduler's placement rules on the view as
// it is now, built as the server's balancer builds its own.
type serverView struct {
	c      *Cluster
	sched  *scheduler.Scheduler
	snap   *scheduler.Snapshot
	allocs []model.Allocation
	vms    []*model.VM // into c.VMs: the records the balancer's hook reads
	err    error
}

// newServerView builds the view of c before any VM is placed, with the
// function the server's balancer builds its view with
// (scheduler.ClusterView). A policy the server would refuse is
// ErrConfig.
func newServerView(c *Cluster) (*serverView, error) {
	v := &serverView{c: c, allocs: make([]model.Allocation, len(c.Hosts)), vms: make([]*model.VM, len(c.VMs))}
	records := make(map[string]model.Allocation, len(c.Hosts))
	for i := range v.allocs {
		v.allocs[i] = model.Allocation{Host: c.Hosts[i].Name, VMs: map[string]bool{}}
		records[c.Hosts[i].Name] = v.allocs[i]
	}
	for i := range c.VMs {
		v.vms[i] = &c.VMs[i]
	}
	var err error
	v.sched, v.snap, err = scheduler.ClusterView(c.Policy, c.Hosts, records)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return v, nil
}

func (v *serverView) request(vm int) scheduler.Request {
	m := &v.c.VMs[vm]
	return scheduler.Request{Key: m.Key(), Spec: &m.Spec}
}

// place chooses VM vm's host exactly as the controller's SchedulerPlacer
// does (Scheduler.Place on the snapshot) and commits it as the controller
// does: the VM records its host, the allocation grows by the decision
// and the snapshot reloads it. It returns the host index, or -1 and the
// explanation's summary.
func (v *serverView) place(vm int) (int, string, error) {
	d := v.sched.Place(v.snap, v.request(vm))
	if d.Err != nil {
		return -1, "", fmt.Errorf("simulate: placing %s: %w", d.Key, d.Err)
	}
	if !d.Placed() {
		return -1, d.Explanation.Summary, nil
	}
	h := v.snap.HostIndex(d.Host)
	v.occupy(vm, h)
	v.c.VMs[vm].Status.Host = d.Host
	return h, "", v.err
}

// arrive completes VM vm's migration from host from (-1: none) to host
// to: the VM's record names to, from's allocation lets it go (to's holds
// it since the copy started).
func (v *serverView) arrive(vm, from, to int) {
	if from >= 0 && from != to {
		v.vacate(vm, from)
	}
	v.occupy(vm, to)
	v.c.VMs[vm].Status.Host = v.c.Hosts[to].Name
}

// drop deletes VM vm from host h (the literature setup's finished VMs).
func (v *serverView) drop(vm, h int) {
	v.vacate(vm, h)
	v.c.VMs[vm].Status.Host = ""
}

// occupy records VM vm on host h (a placement, or a migration holding
// capacity on its target); vacate takes it off. Both are no-ops when the
// record already says so, and reload the host into the snapshot. The
// first error is kept in err (Run returns it).
func (v *serverView) occupy(vm, h int) { v.account(vm, h, +1) }
func (v *serverView) vacate(vm, h int) { v.account(vm, h, -1) }

func (v *serverView) account(vm, h, sign int) {
	m := &v.c.VMs[vm]
	a := &v.allocs[h]
	if a.VMs[m.Key()] == (sign > 0) {
		return
	}
	scheduler.ApplyVM(a, m.Key(), &m.Spec, sign)
	if err := v.snap.SetAllocation(*a); err != nil && v.err == nil {
		v.err = fmt.Errorf("simulate: %w", err)
	}
}

// hook is the feasibility hook of one balancing round: the scheduler's
// MoveCheck over the view as it is now, by the simulator's host and VM
// indices (which are the balance snapshot's), built by the same function
// as the server balancer's (scheduler.BalanceCheck).
func (v *serverView) hook() *scheduler.MoveCheck {
	return v.sched.BalanceCheck(v.snap, v.c.Hosts, v.vms)
}
