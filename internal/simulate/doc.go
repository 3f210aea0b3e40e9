// Package simulate replays a utilisation trace through vpool's placement
// and balance planners in virtual time and measures energy, SLA
// violations (SLATAH, PDM, SLAV, ESV), migrations, host shutdowns and
// active hosts. The "literature" setup reproduces CloudSim 3.0.3's
// PowerDynamicConsolidation examples event for event; "realistic" keeps
// memory in every placement and never drops idle VMs.
//
// It is a decision package: it must not import the store, net/http or
// QEMU code, and never reads the clock itself — wall time is measured
// through an injected clock function.
package simulate
