// Package simulate replays a utilisation trace through vpool's placement
// and balance planners in virtual time and measures energy, SLA
// violations (SLATAH, PDM, SLAV, ESV), migrations, host shutdowns and
// active hosts. VMs start where the server's own scheduler
// (internal/scheduler, on the data centre described in the server's terms
// by Cluster, under the server's default policy) places them, and every
// move the planners make passes the scheduler's placement rules through
// the feasibility hook the server's balancer uses; the literature's
// policies keep the literature's placement and model. The "literature" setup reproduces CloudSim
// 3.0.3's PowerDynamicConsolidation examples event for event;
// "realistic" keeps memory in every placement and never drops idle VMs.
//
// It is a decision package: it must not import the store, the state
// layer, the controllers, net/http or QEMU code, and never reads the
// clock itself — wall time is measured through an injected clock
// function.
package simulate
