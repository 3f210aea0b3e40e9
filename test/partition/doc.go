// Package partition holds the host-HA partition test (issue 15, docs/ha.md):
// a real QEMU host whose agent runs in a network namespace of its own is
// cut off from the server by taking its veth link down; the agent must
// fence itself (kill its QEMU), the server restart its VM on the other
// host, and after the link comes back exactly one QEMU runs the VM and
// holds its disk's lock. It builds cmd/vpool for the agents, runs the
// server in the test process, and needs root, iproute2 and QEMU (it skips
// with -short, and fails under VPOOL_REQUIRE_HEAVY=1 when any is missing).
// Only its tests do anything; it must not be imported.
package partition
