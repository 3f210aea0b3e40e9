// Package scheduler is vpool's placement engine: given a Snapshot of the
// cluster (hosts, their capacity, ratios, labels, state, pools and current
// allocations) and one or many VM requests, it answers a host per VM, or
// "does not fit", each with a model.Explanation.
//
// Design, in the manner of the Kubernetes scheduler framework:
//   - Plugins are registered by name (Builtins), each in its own file, each
//     a Filter and/or a Scorer: hoststate, pin, labels, fit, storage,
//     isolation, affinity (filters), binpack or spread, balance, energy,
//     labels, affinity (scores). Weights come from model.Policy.Weights.
//   - A filter returns a Status, never a string: Unschedulable ("this host
//     does not fit") is not Error ("the plugin broke"). The engine counts
//     rejections per (filter, reason) and keeps the largest Value of each
//     (e.g. free memory), and formats text once per decision, so an
//     explanation reads "412 hosts: insufficient memory (needs 8GiB, most
//     free 6GiB)" without a string built per host.
//   - Speed comes from the Snapshot's layout: hosts are numeric records in
//     a slice, labels are host bitsets, and the schedulable hosts sit in an
//     index bucketed by free capacity (the scarcer of memory and CPU). A
//     decision starts at the first bucket that can hold the VM (binpack:
//     best fit) or at the top (spread), skips the too-full hosts wholesale
//     and stops after finding a few feasible hosts (WithSampling), as
//     Kubernetes' percentageOfNodesToScore does. A VM that fits nowhere is
//     checked against every host, so its explanation is exact.
//   - Snapshot is mutable: Assume commits a decision so a batch sees its own
//     placements, Forget undoes it, Clone gives a scratch copy for dry runs.
//     Decision.Apply / ApplyVM update the caller's model.Allocation, and
//     Scheduler.Check re-runs the filters on one host's fresh allocation
//     before a compare-and-swap.
//   - The gate's checks: CheckOn runs every filter for one decision on one
//     host of a whole-cluster snapshot (what a plan applier re-checks
//     before it commits); CheckMove does the same for a VM moving off its
//     host; MoveCheck answers a move planner (internal/balance's
//     Feasibility) with the round's planned moves held on their targets;
//     ClusterView and BalanceCheck build it the way the server's
//     balancer and the simulator both do.
//     Fits, Allocatable and EffectiveRatios give the fit rule to callers
//     without a snapshot: capacity is written once, in plugin_fit.go.
//
// The package is pure: it imports no store, no net/http, no QEMU, and reads
// no clock (Explanation.Time is left for the caller to set).
package scheduler
