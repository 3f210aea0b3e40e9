package balance

import "github.com/vpool/vpool/internal/energy"

// HistoryLength is the number of past utilisation samples a VM carries
// (the literature's PowerVm.HISTORY_LENGTH).
const HistoryLength = 30

// Host is one server as the planner sees it.
type Host struct {
	Name   string
	MIPS   float64 // total CPU capacity (all cores)
	PEMIPS float64 // capacity of one core; a VM core never gets more
	MemMB  float64
	// BandwidthMbps is the host's network bandwidth; half of it carries
	// migrations.
	BandwidthMbps float64
	// MaxVMs caps the number of VMs (0: no cap). The literature's hosts
	// hold at most 400 VMs (storage).
	MaxVMs int
	Power  energy.Model
	// Util is the CPU utilisation (0..1) measured at the last update;
	// zero means the host is switched off (or idle and about to be).
	Util float64
	// Maintenance hosts are neither sources of consolidation nor targets.
	Maintenance bool
	// VMs lists the VMs on the host (indices into Snapshot.VMs) in the
	// order they arrived; the order breaks ties.
	VMs []int
}

// VM is one virtual machine as the planner sees it.
type VM struct {
	Name  string
	Host  int     // index into Snapshot.Hosts; -1 when not placed
	MIPS  float64 // capacity (one core in the literature setup)
	MemMB float64
	// Demand is the CPU the VM asks for now, in MIPS.
	Demand float64
	// History holds past CPU utilisation as fractions of MIPS, most
	// recent first, at most HistoryLength values.
	History []float64
	// Migrating VMs are moving already and are never selected.
	Migrating bool
}

// Snapshot is the input of one planning round.
type Snapshot struct {
	Hosts []Host
	VMs   []VM
	// Interval is the time between rounds in seconds.
	Interval float64
	// MemoryCounts makes placement respect host memory. The literature
	// setup leaves it false: in CloudSim 3.0.3 a running VM requests no
	// memory, so only the initial placement is limited by memory.
	MemoryCounts bool
	// Feasible, when set, holds the placement rules the planners do not
	// model themselves; every planner asks it before it places or moves a
	// VM and tells it every placement it plans. nil: the planners' own
	// CPU and memory model only (the literature's setup).
	Feasible Feasibility
}

// Feasibility is what a planner consults and informs about the cluster's
// placement rules: required labels, pinned hosts, affinity, isolation
// domains, storage and capacity under the allocation ratios. The server
// and the simulator pass the scheduler's own check (scheduler.MoveCheck
// satisfies it), so that a plan never breaks a rule the scheduler keeps.
// VMs and hosts are indices into the Snapshot.
type Feasibility interface {
	// Feasible reports whether VM vm may be placed on (or move to) host,
	// given the placements held so far in this round. A VM on host
	// already may stay.
	Feasible(vm, host int) bool
	// Hold records that the plan puts vm on host: a moving VM holds its
	// target while it still runs on its source, as a migration does.
	// Holding a VM on its own host does nothing.
	Hold(vm, host int)
	// Release undoes Hold (the planner dropped or rolled back the move).
	Release(vm, host int)
}

// Reason says why a VM moves.
type Reason string

// Reasons for a move.
const (
	ReasonOverload    Reason = "overload"
	ReasonUnderload   Reason = "underload"
	ReasonBalance     Reason = "balance"
	ReasonPlacement   Reason = "placement"
	ReasonMaintenance Reason = "maintenance"
)

// Move is one planned migration.
type Move struct {
	VM     int
	From   int // -1 for a first placement
	To     int
	Reason Reason
}

// Plan is the output of a round: moves to apply in order. A VM may appear
// more than once (the literature's planner does that; the simulator
// reproduces what CloudSim then does).
type Plan struct {
	Moves []Move
	// Note explains the plan for people ("3 hosts overloaded, 2 emptied").
	Note string
}

// Planner turns a snapshot into a plan. Implementations are
// deterministic: the same snapshot (and seed) yields the same plan.
type Planner interface {
	Name() string
	Plan(s *Snapshot) Plan
}

// MigrationSeconds is the literature's migration time: the VM's memory
// sent over half the target host's bandwidth.
func MigrationSeconds(memMB, bandwidthMbps float64) float64 {
	return memMB / (bandwidthMbps * 1000 / (2 * 8000))
}

// InitialPlacer is implemented by planners that also choose where VMs
// start (the host index per VM in s.VMs, -1 when none fits). Unplaced
// VMs in s ask for their full capacity.
type InitialPlacer interface {
	PlaceInitial(s *Snapshot) []int
}
