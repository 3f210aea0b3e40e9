// Package chaos holds the chaos test of issue 15 (docs/ha.md, "Chaos"):
// three `vpool server` processes (each embedding a store member) and
// four `vpool agent` processes (sim driver, VMs on a shared pool,
// migrating over TCP between the agent processes) run a workload of
// creates, deletes and live migrations through a client that knows every
// server, while a chaos loop kills -9 a random server (leader or not,
// never two at once, so the store keeps its quorum) and another a random
// agent, and starts them again after a random pause. Afterwards the
// cluster settles and the invariants are checked against the store, the
// API and the hosts' own state: no VM runs on two hosts (nor did at any
// sample during the run), no acknowledged create is lost, no
// acknowledged delete left a VM, quota usage equals the VMs counted, no
// migration is left unfinished, no host is over capacity.
//
// VPOOL_CHAOS_DURATION (default 30s) is how long the chaos lasts,
// VPOOL_CHAOS_SEED makes a run's random choices repeatable (the seed is
// logged). The test builds cmd/vpool through test/internal/cluster; it
// skips with -short and fails under VPOOL_REQUIRE_HEAVY=1 when it cannot
// run. Only its tests do anything; it must not be imported.
package chaos
