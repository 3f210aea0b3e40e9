package qemu

import (
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Convergence of pre-copy, and the escalation when it does not converge.
//
// QEMU completes a pre-copy migration once what is left to send fits in
// the downtime limit at the measured bandwidth: it then stops the guest
// with up to a downtime limit's worth of memory still to send, even when
// one more pass would have left almost nothing (an idle guest's first
// pass). So pre-copy starts with a small target (DowntimeTarget) and
// raises it to the caller's DowntimeLimit only when that does not
// converge. A guest that dirties memory faster than the stream moves it
// never gets there. The converger watches one sample per pass (dirty
// bitmap sync) and escalates when the remaining memory stops shrinking
// for StallIterations passes (one pass in the downtime step, which acts
// at once), or when a stage has lasted StageTimeout:
//
//	precopy (downtime-limit = min(DowntimeTarget, DowntimeLimit))
//	        → downtime (downtime-limit raised to DowntimeLimit)
//	        → bandwidth (max-bandwidth raised to MaxBandwidthBps)
//	        → auto-converge (QEMU throttles the guest's vCPUs, up to 99 %)
//	        → postcopy (only with AllowPostCopy: migrate-start-postcopy)
//	        → fail, with the reason; the guest keeps running on the source.
//
// The converger is pure: migrate.go feeds it query-migrate samples and
// applies its decisions.

// Defaults of MigrateOptions' zero values.
const (
	DefaultDowntimeLimit = 300 * time.Millisecond
	// DowntimeTarget is the downtime-limit pre-copy starts with when the
	// caller's limit is higher: an idle guest reaches it in one pass, and
	// with the switchover's fixed costs (stop, disk flush through the
	// mirror, device state: ~15–20 ms under TCG) the pause stays well
	// under 50 ms. docs/migration-qemu.md has the measurements.
	DowntimeTarget         = 20 * time.Millisecond
	DefaultBandwidth       = int64(model.GiB)      // ~10 GbE line rate
	DefaultMaxBandwidth    = int64(10 * model.GiB) // effectively unlimited
	DefaultStallIterations = 3
	DefaultStageTimeout    = 30 * time.Second
	DefaultMigrateTimeout  = 10 * time.Minute

	// Auto-converge: QEMU raises the throttle by throttleStep percent
	// every second pass whose dirtying outran the stream, up to
	// throttleMax. Before that stage the capability is on but capped at
	// throttleInert percent (capabilities cannot change mid-migration).
	throttleStart = 30
	throttleStep  = 20
	throttleMax   = 99
	throttleInert = 1
)

// withDefaults fills the zero fields of o.
func migrateDefaults(o hypervisor.MigrateOptions) hypervisor.MigrateOptions {
	if o.DowntimeLimit <= 0 {
		o.DowntimeLimit = DefaultDowntimeLimit
	}
	if o.BandwidthBps <= 0 {
		o.BandwidthBps = DefaultBandwidth
	}
	if o.MaxBandwidthBps <= 0 {
		o.MaxBandwidthBps = max(DefaultMaxBandwidth, o.BandwidthBps)
	}
	if o.StallIterations <= 0 {
		o.StallIterations = DefaultStallIterations
	}
	if o.StageTimeout <= 0 {
		o.StageTimeout = DefaultStageTimeout
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultMigrateTimeout
	}
	return o
}

// startDowntime is the downtime-limit pre-copy starts with: the smaller
// of DowntimeTarget and the caller's limit when the low start is safe
// (lowStart); the caller's limit otherwise and with NoEscalation (QEMU's
// behaviour).
func startDowntime(o hypervisor.MigrateOptions, lowStart bool) time.Duration {
	if o.NoEscalation || !lowStart || o.DowntimeLimit <= DowntimeTarget {
		return o.DowntimeLimit
	}
	return DowntimeTarget
}

// lowStartSafe reports whether pre-copy may start at DowntimeTarget: under
// KVM, or under TCG with QEMU 9.0 or later. With the low start an idle
// guest keeps running across dirty-bitmap syncs, and QEMU before 9.0
// (commit "physmem: Fix migration dirty bitmap coherency with TCG memory
// access") does not make TCG's writable TLB entries trap again when a sync
// clears the bitmap: guest writes through them are never sent, and guests
// moved by the agents crashed soon after arriving (9 of 13 end-to-end runs
// on 7.2; none in 14 on 10.0). docs/migration-qemu.md has the details.
func lowStartSafe(accel, version string) bool {
	if accel == "kvm" {
		return true
	}
	var major, minor int
	if _, err := fmt.Sscanf(version, "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major >= 9
}

// migSample is what the converger sees of one query-migrate answer.
type migSample struct {
	Elapsed   time.Duration // since the memory stream started
	Iteration int64         // dirty-sync-count
	Remaining int64         // bytes
	DirtyRate int64         // bytes/s
	Bandwidth int64         // bytes/s, measured
	Throttle  int           // percent
}

// converger decides escalations. Zero Stage means pre-copy.
type converger struct {
	stages     []string // the steps still available, in order
	stallIters int
	stageTime  time.Duration
	timeout    time.Duration

	fixed      bool          // NoEscalation: only the timeout ends it
	downFrom   time.Duration // the downtime step raises downFrom → downTo
	downTo     time.Duration
	stage      string
	stageStart time.Duration
	lastIter   int64
	best       int64 // smallest remaining at a pass start in this stage
	stall      int   // passes in a row that did not improve best by 10 %
}

func newConverger(o hypervisor.MigrateOptions, lowStart bool) *converger {
	c := &converger{stallIters: o.StallIterations, stageTime: o.StageTimeout, timeout: o.Timeout,
		stage: hypervisor.MigrationStagePreCopy, downFrom: startDowntime(o, lowStart), downTo: o.DowntimeLimit}
	if o.NoEscalation {
		c.fixed = true
		return c
	}
	if c.downFrom < c.downTo {
		c.stages = append(c.stages, hypervisor.MigrationStageDowntime)
	}
	if o.MaxBandwidthBps > o.BandwidthBps {
		c.stages = append(c.stages, hypervisor.MigrationStageBandwidth)
	}
	c.stages = append(c.stages, hypervisor.MigrationStageAutoConverge)
	if o.AllowPostCopy {
		c.stages = append(c.stages, hypervisor.MigrationStagePostCopy)
	}
	return c
}

// decision is the converger's answer to one sample.
type decision struct {
	next   string // the stage to enter; empty with fail
	fail   bool
	reason string
}

// observe takes one sample and says whether to escalate (or give up).
func (c *converger) observe(s migSample) (decision, bool) {
	if s.Elapsed >= c.timeout {
		return decision{fail: true, reason: fmt.Sprintf("did not converge within %v (stage %s, %s)", c.timeout, c.stage, describe(s))}, true
	}
	if c.stage == hypervisor.MigrationStagePostCopy || c.fixed {
		return decision{}, false // post-copy ends by itself; fixed runs to the timeout
	}
	why := ""
	if s.Iteration != c.lastIter && s.Iteration > 0 {
		c.lastIter = s.Iteration
		// Auto-converge needs passes to raise the throttle: a stall only
		// counts once the throttle is at its ceiling.
		ramping := c.stage == hypervisor.MigrationStageAutoConverge && s.Throttle < throttleMax
		switch {
		case c.best == 0 || s.Remaining < c.best*9/10:
			c.best, c.stall = s.Remaining, 0
		case ramping:
			c.stall = 0
		default:
			c.stall++
		}
		if c.stall >= c.stallLimit() {
			why = fmt.Sprintf("remaining memory not shrinking over %d passes", c.stall)
			if c.stall == 1 {
				why = "remaining memory not shrinking over a pass"
			}
		}
	}
	if why == "" && s.Elapsed-c.stageStart >= c.stageTime {
		why = fmt.Sprintf("no convergence in %v", c.stageTime)
	}
	if why == "" {
		return decision{}, false
	}
	why += " (" + describe(s) + ")"
	if len(c.stages) == 0 {
		return decision{fail: true, reason: fmt.Sprintf("did not converge after stage %s: %s", c.stage, why)}, true
	}
	c.stage, c.stages = c.stages[0], c.stages[1:]
	c.stageStart, c.best, c.stall = s.Elapsed, 0, 0
	if c.stage == hypervisor.MigrationStageDowntime {
		why = fmt.Sprintf("limit %v → %v: %s", c.downFrom, c.downTo, why)
	}
	return decision{next: c.stage, reason: why}, true
}

// stallLimit is how many passes without progress end the current stage.
// Raising the downtime limit acts at QEMU's next convergence check (its
// threshold is bandwidth × limit), so one pass that does not converge
// after it is enough to move on; the other steps need StallIterations.
func (c *converger) stallLimit() int {
	if c.stage == hypervisor.MigrationStageDowntime {
		return 1
	}
	return c.stallIters
}

func describe(s migSample) string {
	return fmt.Sprintf("pass %d, remaining %s, dirty rate %s/s, bandwidth %s/s, throttle %d%%",
		s.Iteration, model.Bytes(s.Remaining), model.Bytes(s.DirtyRate), model.Bytes(s.Bandwidth), s.Throttle)
}
