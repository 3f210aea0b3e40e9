// Package controller holds the control loops that run on the elected
// leader of the vpool servers: leader election over the store, the gate,
// the scheduling controller (pending VM → host; a hard affinity or
// anti-affinity group created by one batch is placed all or nothing),
// allocation repair, host liveness and cleanup (finishing deletions,
// compacting events and migrations), the migration controller (live and
// cold migrations through their phases, host drains; see
// docs/migration.md), and the balancer, power and energy controllers.
//
// The gate (gate.go) is the one commit path of every placement and move:
// like Nomad's plan applier it is serial and re-checks each decision with
// the scheduler's own filters on a whole-cluster view before one
// transaction commits it, so no decider — a Placer, the balancer, a drain
// — can break a placement rule. A term writes only through its fenced
// repository (state.Repo.Term): a deposed leader writes nothing.
//
// Each control loop runs on its own goroutine with its own coalescing
// work queue, fed by the watch cache (list at revision R, watch from
// R+1, re-list on compaction) and a resync ticker; loops are
// level-triggered and idempotent, so a crash at any point resumes from
// the stored state, and a slow pass (a hanging IPMI command) delays only
// its own loop.
//
// The package decides nothing about placement itself: it consumes a Placer
// (defined here; SchedulerPlacer adapts internal/scheduler and is the
// default, FirstFit is a minimal stand-in for tests) and feeds live usage
// to an internal/balance planner, with the scheduler's MoveCheck as the
// planner's feasibility hook. The power controller switches hosts through
// a HostPower (defined here: AgentPower, ExecPower for IPMI / Wake-on-LAN
// commands, the only use of os/exec); energy is booked with
// internal/energy models into a ledger stored split per host and project.
//
// It imports internal/store, internal/state, internal/scheduler,
// internal/balance, internal/energy, internal/model and internal/api (the
// dry-run answer's wire type); never net/http, QEMU, the hypervisor
// drivers or etcd.
package controller
