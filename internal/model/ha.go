package model

import (
	"fmt"
	"time"
)

// Host liveness states of host HA (docs/ha.md, "Host failure"): a ready
// host whose renewals stop becomes suspect (nothing new is placed), then
// failed (its agent, if alive but cut off, is killing its VMs now), then
// fenced (it can no longer run anything: its VMs may start elsewhere).
// HostDown is the older single "gone" state; HA treats it as failed.
const (
	HostSuspect HostState = "suspect"
	HostFailed  HostState = "failed"
)

// HA levels of a VM (VMSpec.HA). The empty level is the default: medium
// when every disk of the VM is on shared storage, off otherwise.
const (
	HAHigh   = "high"
	HAMedium = "medium"
	HALow    = "low"
	HAOff    = "off"
)

// HAPolicy holds the timings of host failure detection and fencing, and
// the failover reserve. Zero fields take the defaults (DefaultHAPolicy).
//
// The order that makes restarts safe (docs/ha.md): the agent kills its
// VMs FenceMillis after its last renewal; the server restarts them
// elsewhere no earlier than FenceMillis + MarginMillis after the last
// renewal it saw, or once a fence command (run FenceCommandMillis after
// the last renewal) reported the host off. Validate keeps the timings in
// that order.
type HAPolicy struct {
	// HeartbeatMillis is how often agents renew their liveness.
	HeartbeatMillis int `json:"heartbeatMillis,omitempty"`
	// SuspectMillis without a renewal makes a ready host suspect.
	SuspectMillis int `json:"suspectMillis,omitempty"`
	// FenceMillis without a renewal makes an agent kill every VM it runs,
	// and the host failed.
	FenceMillis int `json:"fenceMillis,omitempty"`
	// MarginMillis is added to FenceMillis before the server restarts a
	// failed host's VMs: it covers clock-rate differences, a slow kill and
	// an agent's scheduling delay.
	MarginMillis int `json:"marginMillis,omitempty"`
	// FenceCommandMillis is how long without a renewal the leader waits
	// before it runs the fence command (a server's --fence-cmd: IPMI,
	// Redfish), at least ha.suspectMillis and at most ha.fenceMillis; 0:
	// at the fence timeout. Once the command reports success the host's
	// VMs restart at once: a powered-off host cannot run them. The
	// leader never runs it within a fence timeout of taking office or of
	// a change of the store's raft leader (renewals may have stalled
	// there, not on the host); a command that fails leaves the host to
	// the fence timeout and margin.
	FenceCommandMillis int `json:"fenceCommandMillis,omitempty"`
	// TolerateHostFailures reserves capacity so that the protected VMs of
	// any that many hosts can restart on the others; a create that would
	// break it is refused (0: no reserve).
	TolerateHostFailures int `json:"tolerateHostFailures,omitempty"`
}

// DefaultHAPolicy is the HA policy of a new cluster: a host's VMs restart
// elsewhere 8 s after its last renewal. The fence timeout (6 s) outlasts
// a control-plane failover on a loaded machine: in test/ha's leader kill
// (load average 17–24, two busy loops beside it) no agent went more than
// 2.5 s without a renewal, now that a heartbeat leaves a server that
// stalls after a quarter of the fence timeout; 10 s before that was
// measured. A leader kill must not make agents kill their VMs
// (test/ha fails when one fences itself). Clusters whose control plane
// answers faster can shorten it (docs/ha.md).
func DefaultHAPolicy() HAPolicy {
	return HAPolicy{HeartbeatMillis: 1000, SuspectMillis: 4000, FenceMillis: 6000, MarginMillis: 2000}
}

// Limits of the HA timings.
const (
	MinHeartbeatMillis = 100
	MaxHAMillis        = 10 * 60 * 1000
	MaxTolerateFailure = 100
)

// WithDefaults returns p with zero fields set to the defaults.
func (p HAPolicy) WithDefaults() HAPolicy {
	d := DefaultHAPolicy()
	if p.HeartbeatMillis == 0 {
		p.HeartbeatMillis = d.HeartbeatMillis
	}
	if p.SuspectMillis == 0 {
		p.SuspectMillis = d.SuspectMillis
	}
	if p.FenceMillis == 0 {
		p.FenceMillis = d.FenceMillis
	}
	if p.MarginMillis == 0 {
		p.MarginMillis = d.MarginMillis
	}
	return p
}

// Heartbeat, Suspect, Fence and Margin return the timings (defaults
// filled in) as durations.
func (p HAPolicy) Heartbeat() time.Duration { return ms(p.WithDefaults().HeartbeatMillis) }

// Suspect is SuspectMillis as a duration.
func (p HAPolicy) Suspect() time.Duration { return ms(p.WithDefaults().SuspectMillis) }

// Fence is FenceMillis as a duration.
func (p HAPolicy) Fence() time.Duration { return ms(p.WithDefaults().FenceMillis) }

// Margin is MarginMillis as a duration.
func (p HAPolicy) Margin() time.Duration { return ms(p.WithDefaults().MarginMillis) }

// FenceCommand is how long without a renewal the fence command waits:
// FenceCommandMillis, or the fence timeout when it is 0.
func (p HAPolicy) FenceCommand() time.Duration {
	if p.FenceCommandMillis == 0 {
		return p.Fence()
	}
	return ms(p.FenceCommandMillis)
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// Validate checks the timings against each other, defaults filled in:
// a heartbeat of at least 100 ms; at least two heartbeats before a host
// is suspect (one lost beat is not a failure); fence after suspect; a
// margin of at least one heartbeat and at least a tenth of the fence
// timeout. Each error names the field and the fix.
func (p *HAPolicy) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"ha.heartbeatMillis", p.HeartbeatMillis}, {"ha.suspectMillis", p.SuspectMillis},
		{"ha.fenceMillis", p.FenceMillis}, {"ha.marginMillis", p.MarginMillis}, {"ha.fenceCommandMillis", p.FenceCommandMillis}} {
		if f.v < 0 || f.v > MaxHAMillis {
			return fieldErr(f.name, "must be between 0 (the default) and %d ms (got %d)", MaxHAMillis, f.v)
		}
	}
	if p.TolerateHostFailures < 0 || p.TolerateHostFailures > MaxTolerateFailure {
		return fieldErr("ha.tolerateHostFailures", "must be between 0 and %d (got %d)", MaxTolerateFailure, p.TolerateHostFailures)
	}
	q := p.WithDefaults()
	if q.HeartbeatMillis < MinHeartbeatMillis {
		return fieldErr("ha.heartbeatMillis", "must be at least %d ms (got %d)", MinHeartbeatMillis, q.HeartbeatMillis)
	}
	if q.SuspectMillis < 2*q.HeartbeatMillis {
		return fieldErr("ha.suspectMillis", "must be at least two heartbeats (%d ms) so that one lost beat is no failure: raise it or lower ha.heartbeatMillis (got %d)",
			2*q.HeartbeatMillis, q.SuspectMillis)
	}
	if q.FenceMillis <= q.SuspectMillis {
		return fieldErr("ha.fenceMillis", "must be longer than ha.suspectMillis (%d ms): raise it or lower ha.suspectMillis (got %d)", q.SuspectMillis, q.FenceMillis)
	}
	if minMargin := max(q.HeartbeatMillis, q.FenceMillis/10); q.MarginMillis < minMargin {
		return fieldErr("ha.marginMillis", "must be at least one heartbeat and a tenth of ha.fenceMillis (%d ms), the slack for clocks and a slow kill: raise it (got %d)",
			minMargin, q.MarginMillis)
	}
	if f := q.FenceCommandMillis; f != 0 && f < q.SuspectMillis {
		return fieldErr("ha.fenceCommandMillis", "must be at least ha.suspectMillis (%d ms): a host is fenced only once it is suspect (its lease expired); raise it, or 0 for the fence timeout (got %d)", q.SuspectMillis, f)
	}
	if f := q.FenceCommandMillis; f > q.FenceMillis {
		return fieldErr("ha.fenceCommandMillis", "must be at most ha.fenceMillis (%d ms): by then the host fenced itself; lower it, or 0 for the fence timeout (got %d)", q.FenceMillis, f)
	}
	return nil
}

// String describes the timings for messages.
func (p HAPolicy) String() string {
	q := p.WithDefaults()
	s := fmt.Sprintf("heartbeat %d ms, suspect %d ms, fence %d ms, margin %d ms", q.HeartbeatMillis, q.SuspectMillis, q.FenceMillis, q.MarginMillis)
	if q.FenceCommandMillis != 0 {
		s += fmt.Sprintf(", fence command at %d ms", q.FenceCommandMillis)
	}
	return s
}

// ValidHALevel reports whether s is a level VMSpec.HA takes.
func ValidHALevel(s string) bool {
	switch s {
	case "", HAHigh, HAMedium, HALow, HAOff:
		return true
	}
	return false
}

// DiskOwner is the owner record of a VM's disks: the host that may open
// them and the epoch of that ownership. Every HA restart elsewhere raises
// the epoch in the same transaction that moves the VM; an agent starts
// QEMU only after the server confirmed (from the store) that it is the
// owner, so a host that comes back after being fenced never starts or
// resumes a VM that was restarted elsewhere.
type DiskOwner struct {
	Host  string `json:"host"`
	Epoch int64  `json:"epoch"`
}

// HAFailover records one host failure and what HA did about it.
type HAFailover struct {
	Host string `json:"host"`
	// LastRenewal is the last renewal the leader saw; DetectedAt when it
	// called the host suspect; FencedAt when it became fenced.
	LastRenewal time.Time `json:"lastRenewal"`
	DetectedAt  time.Time `json:"detectedAt,omitempty"`
	FencedAt    time.Time `json:"fencedAt"`
	// FenceBy says how: "timeout" (fence + margin passed) or "command".
	FenceBy string `json:"fenceBy"`
	// FenceCommandError is why the fence command failed (the host was
	// then fenced by the timeout).
	FenceCommandError string `json:"fenceCommandError,omitempty"`
	// RestartedAt is when the last VM was committed elsewhere.
	RestartedAt time.Time `json:"restartedAt,omitempty"`
	Restarted   int       `json:"restarted"`
	// Stuck are the VMs that could not restart, with the reason.
	Stuck []HAStuck `json:"stuck,omitempty"`
}

// HAStuck is a VM HA could not restart, and why.
type HAStuck struct {
	VM     string `json:"vm"`
	Reason string `json:"reason"`
}

// HAState is the HA controller's stored record (/vpool/ha/state): the
// last failovers, newest first (at most MaxHAFailovers).
type HAState struct {
	Failovers []HAFailover `json:"failovers,omitempty"`
}

// MaxHAFailovers bounds HAState.Failovers.
const MaxHAFailovers = 20
