// Package ha decides host high availability (issue 15, docs/ha.md): which
// liveness state each host is in (ready → suspect → failed → fenced) from
// the last renewal the leader saw, which VMs of fenced hosts restart
// elsewhere, in which order and where (through a Placer the caller hands
// in: the scheduler over a snapshot), which stay failed and why, and
// whether the cluster keeps a reserve for N host failures.
//
// It is a pure core, like internal/scheduler and internal/balance: inputs
// in, a plan out. It imports no store, state, server, client, agent,
// controller or hypervisor package, no net/http, no os/exec, and never
// reads the clock: the controller (internal/controller, ha.go) passes
// "now" and applies the plan through the commit gate.
package ha
