// Package balance plans VM migrations: overload detection (static
// threshold, MAD, IQR, local regression, robust local regression), VM
// selection (minimum migration time, maximum correlation, seeded random),
// power-aware best-fit-decreasing placement, underload consolidation,
// DRS-style load balancing with a cost/benefit check and hysteresis, a
// migration budget per round and per host, and vpool's own consolidation
// policy.
//
// The planners model CPU and memory only. The cluster's placement rules
// (labels, pins, affinity, isolation, storage, capacity under the
// allocation ratios) come in through Snapshot.Feasible, a Feasibility the
// caller passes (the server and the simulator pass the scheduler's
// MoveCheck): every planner asks it before it places or moves a VM and
// tells it every placement it plans, so a plan keeps every rule the
// scheduler keeps.
//
// Everything here is pure: a Snapshot goes in, a Plan comes out. The
// package must not import the store, net/http or QEMU code, must not do
// I/O and must not read the clock; the simulator and the server's
// balancer controller run the very same planners.
package balance
