package scheduler

import "github.com/vpool/vpool/internal/model"

// HostState admits only hosts that are ready and not cordoned. The engine
// keeps unschedulable hosts out of its index and counts them per reason
// without visiting them; Filter serves the paths that walk explicit host
// lists (pinned host, affinity group, rare labels) and direct use.
type HostState struct{}

var _ Filter = (*HostState)(nil)

// Reasons of HostState; reasonReady is the absence of one.
const (
	reasonReady uint8 = iota
	reasonMaintenance
	reasonStandby
	reasonDown
	reasonFenced
	reasonUnknownState
	reasonCordoned
	numStateReasons
)

func stateReasonOf(h *model.Host) uint8 {
	switch h.State {
	case model.HostReady:
		if h.Cordoned {
			return reasonCordoned
		}
		return reasonReady
	case model.HostMaintenance:
		return reasonMaintenance
	case model.HostStandby:
		return reasonStandby
	case model.HostDown, model.HostSuspect, model.HostFailed:
		return reasonDown
	case model.HostFenced:
		return reasonFenced
	}
	return reasonUnknownState
}

// Name implements Plugin.
func (HostState) Name() string { return "hoststate" }

// Filter implements Filter.
func (HostState) Filter(c *Cycle, h int) Status {
	if r := c.snap.hosts[h].stateReason; r != reasonReady {
		return reject(r, 0)
	}
	return ok
}

// Explain implements Filter.
func (HostState) Explain(_ *Cycle, reason uint8, _ int64) string {
	switch reason {
	case reasonMaintenance:
		return "in maintenance"
	case reasonStandby:
		return "in standby (powered down)"
	case reasonDown:
		return "down"
	case reasonFenced:
		return "fenced"
	case reasonCordoned:
		return "cordoned"
	}
	return "not ready (unknown state)"
}
