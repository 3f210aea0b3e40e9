// Package controller holds the control loops that run on the elected
// leader of the vpool servers: leader election over the store, the
// scheduling controller (pending VM → host, committed with one
// compare-and-swap transaction on the VM, the host's allocation and the
// policy; a hard affinity or anti-affinity group created by one batch is
// placed all or nothing and committed in one transaction),
// allocation repair, host liveness and cleanup (finishing deletions,
// compacting events), and the migration controller (live and cold
// migrations through their phases, host drains; see docs/migration.md).
//
// Controllers are driven by store watches (list at revision R, watch from
// R+1, re-list on compaction) and are level-triggered and idempotent: every
// pass recomputes what to do from what is stored, so a crash at any point
// resumes from the stored state.
//
// The package decides nothing about placement itself: it consumes a Placer
// (defined here; SchedulerPlacer adapts internal/scheduler and is the
// default, FirstFit is a minimal stand-in for tests). Every commit still
// re-checks capacity × ratio (Fits), so a faulty Placer cannot overcommit.
//
// The balancer, power and energy controllers (balancer.go, powerctl.go,
// energyctl.go) likewise decide nothing themselves: the balancer feeds a
// snapshot of live usage to an internal/balance planner and stores or
// applies its plan as migrations; the power controller switches hosts
// through a HostPower (defined here: AgentPower, ExecPower for IPMI /
// Wake-on-LAN commands, the only use of os/exec); energy is booked with
// internal/energy models into a ledger persisted in the store.
//
// It imports internal/store, internal/state, internal/scheduler,
// internal/balance, internal/energy, internal/model and internal/api (the
// dry-run answer's wire type); never net/http, QEMU, the hypervisor
// drivers or etcd.
package controller
