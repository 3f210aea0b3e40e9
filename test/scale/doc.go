// Package scale holds the benchmarks of the control plane at the scale of
// issue 14 (docs/scale.md): BenchmarkFleet (simulated hosts and running
// VMs at rest: etcd writes, server CPU and memory, heartbeat, GET and
// list latencies) and BenchmarkPlaceEndToEnd (VM creates through the HTTP
// API until placed, with the fleet's heartbeats, usage and assignments
// running), each on one `vpool server` with its embedded etcd and on
// three servers, and the test that kills the leader with SIGKILL in the
// middle of placing (TestKillLeaderDuringPlacement; with
// VPOOL_SCALE_KILL=1, BenchmarkPlaceEndToEnd on three servers too, which
// then reports the failover's gap: failover_test.go).
//
// Three servers are what docs/ha.md has users run: each with an
// embedded etcd member of one cluster, started together from one
// `--initial-cluster` list with the first member's shared secrets
// copied to the others (topology_test.go); killing the leader kills its
// member too, and the check reads the surviving members. With
// VPOOL_SCALE_EXTERNAL_ETCD=1 the three servers share one external etcd
// member instead (`--etcd-endpoints`: this test binary re-executed as a
// member with fsync on; the harness's only three-server topology before
// the seventh round, and main's then). VPOOL_SCALE_SERVERS=1 or 3 picks
// one topology; both run by default.
//
// Servers are the vpool binary (built from this tree, or
// VPOOL_SCALE_SERVER_BIN to measure another build, e.g. main's); the
// fleet (internal/fleet) and the API clients run in the test process.
// Sizes come from the environment (VPOOL_SCALE_HOSTS, VPOOL_SCALE_VMS,
// ...: harness_test.go) and default to what runs on two cores in a
// minute (200 hosts, 2,000 VMs); docs/scale.md gives the sizes its
// figures were taken at. VPOOL_SCALE_PROFILE=DIR saves each server's CPU
// profile and heap over the measurement. CI runs the tests, not the
// benchmarks.
//
// Only its tests do anything; it must not be imported.
package scale
