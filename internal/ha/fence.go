package ha

import (
	"time"

	"github.com/vpool/vpool/internal/model"
)

// FenceCommandDue reports whether the fence command may run for h at now:
// h is suspect or failed (down), no command ran for it in this failure
// yet (FenceTried), its age is at least Timings.FenceCommand, and the
// control plane has been calm for a whole fence timeout: calm is when it
// last changed under the decider, the later of the start of its term as
// leader and the last change of the store's raft leader it observed
// (renewals may have stalled around either: heartbeats wait for the
// store's election, a new leader stamps renewals afresh). A command that
// fails is not run again: the host is left to the self-fence timeline
// (fence + margin).
func FenceCommandDue(t Timings, now time.Time, calm time.Time, h Host) bool {
	switch h.State {
	case model.HostSuspect, model.HostFailed, model.HostDown:
	default:
		return false
	}
	if h.FenceTried || h.FenceConfirmed {
		return false
	}
	return !now.Before(h.LastRenewal.Add(t.fenceCommand())) && !now.Before(calm.Add(t.Fence))
}

// fenceCommand is when the command runs (the fence timeout if unset).
func (t Timings) fenceCommand() time.Duration {
	if t.FenceCommand <= 0 {
		return t.Fence
	}
	return t.FenceCommand
}

// NextDeadline returns the earliest time after now at which HostSteps,
// or FenceCommandDue when withCommand, could answer differently for
// these hosts if no renewal comes (zero: no deadline). The HA loop sets
// a timer to it, so that a host is suspect, failed or fenced at its
// deadline rather than at the next periodic pass.
func NextDeadline(t Timings, now time.Time, calm time.Time, hosts []Host, withCommand bool) time.Time {
	var next time.Time
	consider := func(at time.Time) {
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	for _, h := range hosts {
		if !liveness(h.State) {
			continue
		}
		switch h.State {
		case model.HostReady:
			consider(h.LastRenewal.Add(t.Suspect))
		case model.HostSuspect:
			consider(h.LastRenewal.Add(t.Fence))
		case model.HostFailed, model.HostDown:
			consider(h.LastRenewal.Add(t.Fence + t.Margin))
		}
		if withCommand && (h.State == model.HostReady || h.State == model.HostSuspect || h.State == model.HostFailed || h.State == model.HostDown) &&
			!h.FenceTried && !h.FenceConfirmed {
			at := h.LastRenewal.Add(t.fenceCommand())
			if c := calm.Add(t.Fence); c.After(at) {
				at = c
			}
			consider(at)
		}
	}
	return next
}
