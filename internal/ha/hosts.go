package ha

import (
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Timings are the HA policy's timings as durations.
type Timings struct {
	Suspect, Fence, Margin time.Duration
	// FenceCommand is the age at which a fence command may run (0: at
	// Fence); FenceCommandDue adds the calm rule.
	FenceCommand time.Duration
}

// TimingsOf returns p's timings, defaults filled in.
func TimingsOf(p model.HAPolicy) Timings {
	return Timings{Suspect: p.Suspect(), Fence: p.Fence(), Margin: p.Margin(), FenceCommand: p.FenceCommand()}
}

// Host is what HostSteps needs of a host.
type Host struct {
	Name  string
	State model.HostState
	// LastRenewal is the latest time, on the decider's clock, at which
	// the host may have renewed its liveness: never earlier than the
	// renewal itself (the controller stamps the moment it observed one).
	LastRenewal time.Time
	// FenceConfirmed says a fence command reported success after the
	// host went suspect: it is off, whatever the timeouts say.
	FenceConfirmed bool
	// FenceTried says a fence command ran (or runs) for this failure.
	FenceTried bool
}

// Step is one state change of a host.
type Step struct {
	Host     string
	From, To model.HostState
	Reason   string
}

// liveness reports whether a state is one HostSteps manages; the others
// (maintenance, standby) are an operator's or the power controller's.
func liveness(s model.HostState) bool {
	switch s {
	case model.HostReady, model.HostSuspect, model.HostFailed, model.HostDown, model.HostFenced:
		return true
	}
	return false
}

// HostSteps returns the state changes due at now, in order; a host that
// passed several timeouts at once gets each step, so that every state is
// recorded (one event each). The rules, with age = now − LastRenewal:
//
//	ready   → suspect  at age ≥ Suspect
//	suspect → failed   at age ≥ Fence (its agent is fencing itself now)
//	failed  → fenced   at age ≥ Fence + Margin, or once a fence command
//	                   reported success
//	any of them → ready when a renewal is seen again (age < Suspect)
//
// down (the older "gone" state) is handled as failed.
func HostSteps(t Timings, now time.Time, hosts []Host) []Step {
	var out []Step
	for _, h := range hosts {
		if !liveness(h.State) {
			continue
		}
		age := now.Sub(h.LastRenewal)
		if age < t.Suspect {
			if h.State != model.HostReady {
				out = append(out, Step{h.Name, h.State, model.HostReady, "renewing again"})
			}
			continue
		}
		state := h.State
		if state == model.HostReady {
			out = append(out, Step{h.Name, state, model.HostSuspect, fmt.Sprintf("no renewal for %s", round(age))})
			state = model.HostSuspect
		}
		if state == model.HostSuspect && (age >= t.Fence || h.FenceConfirmed) {
			out = append(out, Step{h.Name, state, model.HostFailed, fmt.Sprintf("no renewal for %s, the fence timeout: its agent kills its VMs", round(age))})
			state = model.HostFailed
		}
		if state == model.HostFailed || state == model.HostDown {
			switch {
			case h.FenceConfirmed:
				out = append(out, Step{h.Name, state, model.HostFenced, "the fence command reported success"})
			case age >= t.Fence+t.Margin:
				out = append(out, Step{h.Name, state, model.HostFenced, fmt.Sprintf("no renewal for %s, past the fence timeout and margin", round(age))})
			}
		}
	}
	return out
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
