// Package e2e holds whole-binary tests: they build cmd/vpool, run `vpool
// server` and several `vpool agent` processes over mutual TLS on loopback,
// drive them with the CLI and the Go client, and kill processes with
// SIGKILL to check crash safety. They are skipped with -short.
//
// Agents run the sim driver. A sim host lives inside its agent process,
// so for "kill -9 an agent: its VMs keep running" the sim driver persists
// its VMs to the agent's state directory (sim/host.json): the file stands
// for the QEMU processes that outlive a killed agent, and the restarted
// agent must adopt them without restarting any (their simulated pids stay
// the same). With real QEMU the same path is exercised by `vpool dev`
// re-attaching to running guests.
//
// Only its tests do anything; this package has no non-test code besides
// this comment and must not be imported.
package e2e
