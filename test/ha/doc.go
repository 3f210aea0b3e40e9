// Package ha holds the control plane's failover tests and benchmark
// (docs/ha.md): they build cmd/vpool, run three `vpool server` processes
// on loopback that each embed a store member (the second and third join
// the first with a server join token), drive them with the Go client —
// which knows all three and fails over on its own — and kill the leader
// with SIGKILL. Simulated hosts run in the test process (agents that
// know all three servers, one sim registry so that migrations work), so
// that the hosts can be read directly: which VM runs where, how often.
//
// Without -short the tests run in CI; with -short they skip, or fail
// under VPOOL_REQUIRE_HEAVY=1. Only its tests do anything; this package
// has no non-test code besides this comment and must not be imported.
package ha
