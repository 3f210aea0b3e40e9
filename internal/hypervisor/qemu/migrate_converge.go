package qemu

import (
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Convergence of pre-copy, and the escalation when it does not converge.
//
// QEMU completes a pre-copy migration once what is left to send fits in
// the downtime limit at the bandwidth it expects: it then stops the guest
// and sends the rest. So pre-copy starts with a small target
// (DowntimeTarget), which lets an idle guest's first pass run to its end,
// and escalates only when that does not converge.
//
// The caller's DowntimeLimit is a cap, not a target: QEMU is never given
// more than capLimit (the limit less a reserve for what the downtime adds
// to the memory: stopping the vCPUs, flushing disks, device state), and
// from the first pass on the bandwidth QEMU plans the switchover with
// (avail-switchover-bandwidth) is a cautious one measured by the
// converger, not QEMU's last 100 ms. A guest whose memory cannot be sent
// within the cap is escalated, and fails with the reason when nothing is
// left to try; it is never switched over with an expected downtime above
// the cap.
//
// The escalation is chosen from the measured dirty rate D and stream
// bandwidth B rather than walked in order, one decision per pass (dirty
// bitmap sync):
//
//   - raise downtime-limit to the cap: enough when the rest fits in it;
//   - raise max-bandwidth: only when the stream runs at its cap (a stream
//     bound by CPU or the network gains nothing);
//   - throttle the guest (auto-converge), starting at the throttle that
//     brings D to half of B, or high when D is saturated (the guest
//     rewrites its whole working set every pass, so the true rate is
//     unknown and above the measured one);
//   - post-copy (only with AllowPostCopy), straight away when the guest
//     would need a throttle above postcopyThrottle, or once throttling did
//     not help;
//   - fail with the reason; the guest keeps running on the source.
//
// It escalates when the figures say the current parameters cannot
// converge (the guest dirties at least 4/5 of what the stream moves and
// the rest does not fit), and otherwise, as before, when the remaining
// memory has not shrunk by 10 % over StallIterations passes (one pass
// after an escalation), or when a stage has lasted StageTimeout.
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
	// A throttle of p stops the vCPU for 10 ms × p/(1-p) at a time
	// (QEMU's cpu-throttle), which the guest sees as standing still: 90 ms
	// at 90 %, 990 ms at 99 %; so throttleMax is 90, within the guest gap
	// SLO. A guest that does not converge there gets one last step, the
	// ceiling raised to throttleFinal (190 ms at a time at 95 %: with the
	// switchover and a loaded host's wait for the CPU still within the
	// 1 s guest gap), and then fails at the cap (or switches to post-copy
	// when it may, before the last step).
	throttleStart = 30
	throttleStep  = 20
	throttleMax   = 90
	throttleFinal = 95
	throttleInert = 1
	// throttleSaturated is where throttling starts when the dirty rate is
	// saturated (unknown, above the measured one).
	throttleSaturated = 60
	// postcopyThrottle: a VM that allows post-copy switches to it rather
	// than being throttled more than this.
	postcopyThrottle = 50

	// capReserveMax bounds the part of the cap kept for what the downtime
	// adds to sending memory (stop, disk flush, device state: 10–30 ms
	// measured, more under load); capLimit keeps min(cap/5, this).
	capReserveMax = 25 * time.Millisecond
	// multifdReserveMax is capReserveMax over several channels (see
	// overChannels).
	multifdReserveMax = 75 * time.Millisecond
	// switchoverShare of the lowest recent bandwidth is what QEMU plans
	// the switchover with.
	switchoverShare = 0.8
)

// migrateDefaults fills the zero fields of o.
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

// capLimit is the most QEMU's downtime-limit is ever set to for a cap of
// limit: the cap less a reserve (a fifth, at most capReserveMax) for the
// stop, disk flush and device state QEMU's estimate leaves out. At least
// 1 ms (QEMU counts in ms).
func capLimit(limit time.Duration) time.Duration {
	return max(time.Millisecond, (limit - min(limit/5, capReserveMax)).Truncate(time.Millisecond))
}

// startDowntime is the downtime-limit pre-copy starts with: the smaller
// of DowntimeTarget and capLimit when the low start is safe (lowStart),
// capLimit otherwise; with NoEscalation the caller's limit as it is
// (QEMU's own behaviour, for comparisons).
func startDowntime(o hypervisor.MigrateOptions, lowStart bool) time.Duration {
	c := capLimit(o.DowntimeLimit)
	switch {
	case o.NoEscalation:
		return o.DowntimeLimit
	case !lowStart:
		return c
	}
	return min(DowntimeTarget, c)
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

// converger decides escalations.
type converger struct {
	o     hypervisor.MigrateOptions
	fixed bool // NoEscalation: only the timeout ends it

	// What is in force.
	stage      string
	stageStart time.Duration
	downtime   time.Duration // QEMU's downtime-limit
	capped     time.Duration // capLimit(o.DowntimeLimit)
	bandwidth  int64         // max-bandwidth
	throttling bool
	ceiling    int // max-cpu-throttle once throttling
	escalated  int // escalations so far

	// Pass bookkeeping.
	lastIter  int64
	best      int64   // smallest remaining at a pass start in this stage
	stall     int     // passes in a row that did not improve best by 10 %
	sinceStep int     // passes since the last escalation
	prevRem   int64   // remaining at the start of the pass under way
	before    int64   // ... and of the pass before it
	passBw    []int64 // bandwidth samples of the pass under way
	recentBw  []int64 // median bandwidth of the last passes, newest last
}

func newConverger(o hypervisor.MigrateOptions, lowStart bool) *converger {
	return &converger{o: o, fixed: o.NoEscalation, stage: hypervisor.MigrationStagePreCopy,
		downtime: startDowntime(o, lowStart), capped: capLimit(o.DowntimeLimit), bandwidth: o.BandwidthBps}
}

// overChannels keeps the larger reserve of a migration over several
// multifd channels: QEMU's switch-over estimate leaves out the final sync
// of every channel, and f (2 GiB rewriting 512 MiB) over two channels
// ended at 327 ms under a 300 ms cap with the single stream's 25 ms
// reserve (1 run of 10 under two busy loops).
func (c *converger) overChannels() {
	if c.fixed {
		return
	}
	c.capped = multifdCapLimit(c.o.DowntimeLimit)
	c.downtime = min(c.downtime, c.capped)
}

// multifdCapLimit is capLimit for several channels: the cap less a
// quarter of it, at most multifdReserveMax.
func multifdCapLimit(limit time.Duration) time.Duration {
	return max(time.Millisecond, (limit - min(limit/4, multifdReserveMax)).Truncate(time.Millisecond))
}

// decision is the converger's answer to one sample: the stage entered
// and what to set. Zero fields are left as they are.
type decision struct {
	next      string // the stage entered; empty with fail
	fail      bool
	reason    string
	downtime  time.Duration // downtime-limit
	bandwidth int64         // max-bandwidth
	throttle  int           // start auto-converge at this percent
	ceiling   int           // raise auto-converge's ceiling to this percent
	postcopy  bool          // migrate-start-postcopy
}

// observe takes one sample and says whether to escalate (or give up).
func (c *converger) observe(s migSample) (decision, bool) {
	if s.Elapsed >= c.o.Timeout {
		return decision{fail: true, reason: fmt.Sprintf("did not converge within %v (stage %s, %s)", c.o.Timeout, c.stage, describe(s))}, true
	}
	if c.stage == hypervisor.MigrationStagePostCopy || c.fixed {
		return decision{}, false // post-copy ends by itself; fixed runs to the timeout
	}
	if s.Bandwidth > 0 {
		c.passBw = append(c.passBw, s.Bandwidth)
	}
	why := ""
	if s.Iteration != c.lastIter && s.Iteration > 0 {
		if c.lastIter < 2 && s.Iteration >= 2 && c.escalated == 0 {
			c.stageStart = s.Elapsed // pre-copy's time runs from the first pass's end
		}
		c.lastIter = s.Iteration
		c.closePass()
		why = c.passEnded(s)
		c.before, c.prevRem = c.prevRem, s.Remaining
	}
	// A stage's time runs once the first pass has ended: before, nothing
	// is known of the dirty rate and nothing could converge.
	if why == "" && c.lastIter >= 2 && s.Elapsed-c.stageStart >= c.o.StageTimeout {
		why = fmt.Sprintf("no convergence in %v", c.o.StageTimeout)
	}
	if why == "" {
		return decision{}, false
	}
	d := c.plan(s, why+" ("+describe(s)+")")
	if !d.fail {
		c.stage, c.stageStart, c.best, c.stall, c.sinceStep = d.next, s.Elapsed, 0, 0, 0
		c.escalated++
	}
	return d, true
}

// closePass records the median bandwidth of the pass that just ended.
func (c *converger) closePass() {
	if len(c.passBw) == 0 {
		return
	}
	slices.Sort(c.passBw)
	c.recentBw = append(c.recentBw, c.passBw[len(c.passBw)/2])
	if len(c.recentBw) > 3 {
		c.recentBw = c.recentBw[1:]
	}
	c.passBw = c.passBw[:0]
}

// passEnded updates the stall count at a pass start and says why to
// escalate now, or "".
func (c *converger) passEnded(s migSample) string {
	c.sinceStep++
	// Auto-converge needs passes to raise the throttle: a stall only
	// counts once the throttle is at its ceiling.
	ramping := c.throttling && s.Throttle < c.ceiling
	switch {
	case c.best == 0 || s.Remaining < c.best*9/10:
		c.best, c.stall = s.Remaining, 0
	case ramping:
		c.stall = 0
	default:
		c.stall++
	}
	limit := c.o.StallIterations
	if c.escalated > 0 {
		limit = 1 // after an escalation its effect shows in the next pass
	}
	if c.stall >= limit {
		if c.stall == 1 {
			return "remaining memory not shrinking over a pass"
		}
		return fmt.Sprintf("remaining memory not shrinking over %d passes", c.stall)
	}
	// The figures: once the first pass (which sends everything once) is
	// over, each pass leaves about q = dirty rate / bandwidth of the one
	// before; when the rest needs more than maxPasses such passes to fit
	// in the downtime in force, waiting will not do. After an escalation,
	// one pass for it to act first.
	b := c.switchoverBandwidth()
	if s.Iteration < 2 || ramping || b <= 0 || s.Bandwidth <= 0 || (c.escalated > 0 && c.sinceStep < 2) {
		return ""
	}
	if n := passesToFit(s.Remaining, fits(b, c.downtime), ratio(s)); n > maxPasses {
		return fmt.Sprintf("at %s/s dirtied of %s/s sent the rest needs %s more passes to fit in %v",
			model.Bytes(s.DirtyRate), model.Bytes(s.Bandwidth), passes(n), c.downtime)
	}
	return ""
}

// plan chooses the escalation for sample s, given why one is needed.
func (c *converger) plan(s migSample, why string) decision {
	d := decision{reason: why}
	thr := fits(max(c.switchoverBandwidth(), 1), c.capped) // what fits at the cap
	if c.downtime < c.capped {
		d.reason = fmt.Sprintf("limit %v → %v: %s", c.downtime, c.capped, why)
		d.next, d.downtime, c.downtime = hypervisor.MigrationStageDowntime, c.capped, c.capped
		if passesToFit(s.Remaining, thr, ratio(s)) <= 3 {
			return d // the rest fits at the cap, or will in a few passes
		}
	}
	if c.bandwidth < c.o.MaxBandwidthBps && s.Bandwidth*5 >= c.bandwidth*4 {
		// The stream runs at its cap: more bandwidth helps.
		d.next, d.bandwidth, c.bandwidth = hypervisor.MigrationStageBandwidth, c.o.MaxBandwidthBps, c.o.MaxBandwidthBps
		return d
	}
	need, saturated := neededThrottle(s, c.before)
	slow := passesToFit(s.Remaining, thr, 0.5) // even at half the bandwidth dirtied
	switch {
	case c.o.AllowPostCopy && (c.throttling || need > postcopyThrottle || slow > maxPasses):
		d.next, d.postcopy = hypervisor.MigrationStagePostCopy, true
		switch {
		case need > postcopyThrottle:
			d.reason += fmt.Sprintf("; post-copy rather than a %d%% throttle", need)
		case !c.throttling:
			d.reason += fmt.Sprintf("; post-copy: even throttled the rest needs %s passes to fit in %v", passes(slow), c.capped)
		}
	case !c.throttling:
		c.throttling, c.ceiling = true, throttleMax
		d.next, d.throttle = hypervisor.MigrationStageAutoConverge, need
		if saturated {
			d.reason += "; the guest rewrites its working set every pass: its true rate is higher"
		}
	case c.ceiling < throttleFinal:
		// The last step: a throttle whose stops (throttleStop) the guest
		// still sees as a pause within the SLO, for a guest that outran
		// throttleMax.
		d.next, d.ceiling, c.ceiling = hypervisor.MigrationStageAutoConverge, throttleFinal, throttleFinal
		d.reason += fmt.Sprintf("; throttle ceiling %d%% → %d%% (the guest stops %v at a time)",
			throttleMax, throttleFinal, throttleStop(throttleFinal))
	default:
		reason := fmt.Sprintf("did not converge within the %v downtime cap after stage %s: %s", c.o.DowntimeLimit, c.stage, why)
		if !c.o.AllowPostCopy {
			// What the user can change: the guest cannot (issue 13's d
			// and f rewrite a quarter of their memory faster than a 90%
			// throttle lets a pass shrink it).
			reason += "; to move it, allow post-copy (spec.migration.allowPostCopy) or raise the downtime limit (--downtime-limit)"
		}
		return decision{fail: true, reason: reason}
	}
	return d
}

// neededThrottle is the throttle (percent) that brings the dirty rate to
// half the bandwidth, and whether the measured rate is saturated (the
// guest dirtied about everything the last pass left, so its true rate is
// unknown): then throttleSaturated at least.
func neededThrottle(s migSample, prevRem int64) (int, bool) {
	need := throttleStart
	if s.DirtyRate > 0 && s.Bandwidth > 0 {
		need = int(100 - 100*float64(s.Bandwidth)/float64(2*s.DirtyRate) + 0.999)
	}
	saturated := prevRem > 0 && s.Remaining*10 >= prevRem*9
	if saturated {
		need = max(need, throttleSaturated)
	}
	return min(max(need, throttleStart), throttleMax), saturated
}

// throttleStop is how long QEMU's cpu-throttle stops a vCPU at a time at
// pct percent: 10 ms × pct/(100-pct).
func throttleStop(pct int) time.Duration {
	return 10 * time.Millisecond * time.Duration(pct) / time.Duration(100-pct)
}

// maxPasses is how many more pre-copy passes are worth waiting for.
const maxPasses = 5

// ratio is dirty rate / bandwidth: the share of a pass the guest dirties
// again while it is sent.
func ratio(s migSample) float64 {
	if s.Bandwidth <= 0 {
		return 1
	}
	return float64(s.DirtyRate) / float64(s.Bandwidth)
}

// passesToFit estimates the pre-copy passes until rem fits in thr when
// each pass leaves q of the one before: +Inf when it never does.
func passesToFit(rem, thr int64, q float64) float64 {
	switch {
	case rem <= thr:
		return 0
	case thr <= 0 || q >= 1:
		return math.Inf(1)
	case q <= 0:
		return 1
	}
	return math.Log(float64(rem)/float64(thr)) / math.Log(1/q)
}

func passes(n float64) string {
	if math.IsInf(n, 1) {
		return "endless"
	}
	return fmt.Sprintf("~%.0f", math.Ceil(n))
}

// switchoverBandwidth is the bandwidth QEMU should plan the switchover
// with: switchoverShare of the lowest median of the last passes (0 before
// a pass has ended).
func (c *converger) switchoverBandwidth() int64 {
	if len(c.recentBw) == 0 {
		return 0
	}
	return int64(float64(slices.Min(c.recentBw)) * switchoverShare)
}

// streamBandwidth is the highest median bandwidth of the last passes
// (0 before a pass has ended): what the stream moved, for the next
// migration's choice of channels.
func (c *converger) streamBandwidth() int64 {
	if len(c.recentBw) == 0 {
		return 0
	}
	return slices.Max(c.recentBw)
}

// fits is how many bytes a stream of bw bytes/s sends in d.
func fits(bw int64, d time.Duration) int64 {
	return int64(float64(bw) * d.Seconds())
}

func describe(s migSample) string {
	return fmt.Sprintf("pass %d, remaining %s, dirty rate %s/s, bandwidth %s/s, throttle %d%%",
		s.Iteration, model.Bytes(s.Remaining), model.Bytes(s.DirtyRate), model.Bytes(s.Bandwidth), s.Throttle)
}
