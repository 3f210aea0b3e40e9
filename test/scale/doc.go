// Package scale holds the benchmarks of the control plane at the scale of
// issue 14 (docs/scale.md): BenchmarkFleet (simulated hosts and running
// VMs at rest: etcd writes, server CPU and memory, heartbeat, GET and
// list latencies) and BenchmarkPlaceEndToEnd (VM creates through the HTTP
// API until placed, with the fleet's heartbeats, usage and assignments
// running), each on one `vpool server` with its embedded etcd and on
// three servers sharing an external etcd, and the test that kills the
// leader with SIGKILL in the middle of placing.
//
// Servers are the vpool binary (built from this tree, or
// VPOOL_SCALE_SERVER_BIN to measure another build, e.g. main's); the
// external etcd is this test binary re-executed as a member with fsync
// on; the fleet (internal/fleet) and the API clients run in the test
// process. Sizes come from the environment (VPOOL_SCALE_HOSTS,
// VPOOL_SCALE_VMS, ...: harness_test.go) and default to what runs on two
// cores in a minute (200 hosts, 2,000 VMs); docs/scale.md gives the
// sizes its figures were taken at. VPOOL_SCALE_PROFILE=DIR saves each
// server's CPU profile and heap over the measurement. CI runs the test,
// not the benchmarks.
//
// Only its tests do anything; it must not be imported.
package scale
