package qemu

import (
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// TestConverger walks the converger through query-migrate samples: one per
// pass (pass = dirty-sync-count) with remaining memory, dirty rate and
// bandwidth in MiB(/s), and checks each decision.
func TestConverger(t *testing.T) {
	mib := int64(model.MiB)
	type want struct {
		next      string // "" no escalation, "fail"
		why       string // a substring of the reason
		downtime  time.Duration
		bandwidth int64
		throttle  int
		ceiling   int
		postcopy  bool
	}
	type step struct {
		s migSample
		w want
	}
	pass := func(sec, it, rem, dirty, bw int64, throttle int) migSample {
		return migSample{Elapsed: time.Duration(sec) * time.Second, Iteration: it, Remaining: rem * mib,
			DirtyRate: dirty * mib, Bandwidth: bw * mib, Throttle: throttle}
	}
	const (
		dt  = hypervisor.MigrationStageDowntime
		bw  = hypervisor.MigrationStageBandwidth
		ac  = hypervisor.MigrationStageAutoConverge
		pc  = hypervisor.MigrationStagePostCopy
		cap = 275 * time.Millisecond // capLimit(300ms)
	)
	for _, tc := range []struct {
		name  string
		opts  hypervisor.MigrateOptions
		steps []step
	}{
		{"an idle guest converges at the low start", hypervisor.MigrateOptions{}, []step{
			{pass(1, 1, 900, 0, 170, 0), want{}}, {pass(2, 2, 3, 1, 170, 0), want{}},
		}},
		{"shrinking converges without escalation", hypervisor.MigrateOptions{}, []step{
			{pass(1, 1, 200, 40, 170, 0), want{}}, {pass(2, 2, 100, 40, 170, 0), want{}}, {pass(3, 3, 50, 40, 170, 0), want{}},
			{pass(4, 4, 20, 40, 170, 0), want{}},
		}},
		{"busy guest whose rest fits at the cap: the downtime step alone, after one pass",
			hypervisor.MigrateOptions{}, []step{
				{pass(1, 1, 256, 160, 170, 0), want{}},
				{pass(2, 2, 30, 160, 170, 0), want{next: dt, why: "limit 20ms → 275ms: at 160MiB/s dirtied of 170MiB/s sent the rest needs ~40 more passes to fit in 20ms", downtime: cap}},
			}},
		{"working set above the cap at this bandwidth: downtime and throttle in one step",
			hypervisor.MigrateOptions{}, []step{
				{pass(1, 1, 256, 160, 170, 0), want{}},
				{pass(2, 2, 64, 160, 170, 0), want{next: ac, downtime: cap, throttle: 47}},
				{pass(3, 3, 60, 140, 170, 47), want{}}, // the throttle ramps: no stall
				{pass(4, 4, 40, 60, 170, 67), want{}},
			}},
		{"the guest rewrites its working set every pass: throttle high",
			hypervisor.MigrateOptions{}, []step{
				{pass(1, 1, 256, 170, 170, 0), want{}},
				{pass(2, 2, 250, 170, 170, 0), want{next: ac, downtime: cap, throttle: throttleSaturated, why: "true rate is higher"}},
			}},
		{"a stream at its cap gets more bandwidth, with the downtime",
			hypervisor.MigrateOptions{BandwidthBps: 128 << 20}, []step{
				{pass(1, 1, 256, 120, 125, 0), want{}},
				{pass(2, 2, 200, 120, 125, 0), want{next: bw, downtime: cap, bandwidth: DefaultMaxBandwidth}},
				{pass(3, 3, 190, 120, 600, 0), want{}}, // one pass for it to act
				{pass(4, 4, 20, 120, 600, 0), want{}},
			}},
		{"a VM that allows post-copy goes there rather than being throttled hard",
			hypervisor.MigrateOptions{AllowPostCopy: true}, []step{
				{pass(1, 1, 256, 170, 170, 0), want{}},
				{pass(2, 2, 250, 170, 170, 0), want{next: pc, downtime: cap, postcopy: true, why: "post-copy rather than a 60% throttle"}},
				{pass(500, 8, 256, 170, 170, 0), want{}}, // post-copy ends by itself
			}},
		{"a tiny cap: post-copy in one step, since even throttled the rest would need many passes",
			hypervisor.MigrateOptions{AllowPostCopy: true, DowntimeLimit: time.Millisecond, BandwidthBps: 32 << 20, MaxBandwidthBps: 32 << 20}, []step{
				{pass(8, 1, 256, 0, 32, 0), want{}},
				{pass(9, 2, 62, 17, 32, 0), want{next: pc, postcopy: true, why: "even throttled the rest needs ~12 passes to fit in 1ms"}},
			}},
		{"a mild throttle first, post-copy when it did not help",
			hypervisor.MigrateOptions{AllowPostCopy: true}, []step{
				{pass(1, 1, 256, 120, 150, 0), want{}},
				{pass(2, 2, 128, 120, 150, 0), want{next: ac, downtime: cap, throttle: 38}},
				{pass(3, 3, 128, 120, 150, 38), want{}}, // ramping
				{pass(4, 4, 128, 120, 150, 99), want{next: pc, postcopy: true, why: "not shrinking over a pass"}},
			}},
		{"nothing left to try: fail with the cap in the reason", hypervisor.MigrateOptions{}, []step{
			{pass(1, 1, 256, 160, 170, 0), want{}},
			{pass(2, 2, 64, 160, 170, 0), want{next: ac, downtime: cap, throttle: 47}},
			{pass(3, 3, 64, 160, 170, 67), want{}},
			{pass(4, 4, 64, 160, 170, 90), want{next: ac, ceiling: throttleFinal, why: "throttle ceiling 90% → 95% (the guest stops 190ms at a time)"}},
			{pass(5, 5, 64, 160, 170, 90), want{}}, // ramping to the new ceiling
			{pass(6, 6, 64, 160, 170, 95), want{next: "fail", why: "within the 300ms downtime cap after stage auto-converge"}},
		}},
		{"the last throttle step lets a guest that outran 90% converge", hypervisor.MigrateOptions{}, []step{
			{pass(1, 1, 256, 300, 300, 0), want{}},
			{pass(2, 2, 250, 300, 300, 0), want{next: ac, downtime: cap, throttle: throttleSaturated}},
			{pass(3, 3, 250, 300, 300, 80), want{}},
			{pass(4, 4, 250, 300, 300, 90), want{next: ac, ceiling: throttleFinal}},
			{pass(5, 5, 150, 150, 300, 95), want{}},
			{pass(6, 6, 60, 80, 300, 95), want{}},
		}},
		{"the failure says how to move such a guest", hypervisor.MigrateOptions{}, []step{
			{pass(1, 1, 256, 300, 300, 0), want{}},
			{pass(2, 2, 250, 300, 300, 0), want{next: ac, downtime: cap, throttle: throttleSaturated}},
			{pass(3, 3, 250, 300, 300, 70), want{}},
			{pass(4, 4, 250, 300, 300, 90), want{next: ac, ceiling: throttleFinal}},
			{pass(5, 5, 250, 300, 300, 95), want{}}, // one pass for the step to act
			{pass(6, 6, 250, 300, 300, 95), want{next: "fail", why: "allow post-copy (spec.migration.allowPostCopy) or raise the downtime limit"}},
		}},
		{"memory not shrinking while the figures look fine: the stall rule", hypervisor.MigrateOptions{}, []step{
			{pass(1, 1, 256, 10, 170, 0), want{}}, {pass(2, 2, 250, 10, 170, 0), want{}}, {pass(3, 3, 250, 10, 170, 0), want{}},
			{pass(4, 4, 251, 10, 170, 0), want{next: dt, why: "limit 20ms → 275ms: remaining memory not shrinking over 3 passes", downtime: cap}},
		}},
		{"a stage ends by its timeout too, once the first pass is over", hypervisor.MigrateOptions{DowntimeLimit: 100 * time.Millisecond}, []step{
			{pass(1, 1, 900, 0, 170, 0), want{}},
			{pass(40, 1, 500, 0, 170, 0), want{}}, // still the first pass: nothing known
			{pass(41, 2, 256, 10, 170, 0), want{}},
			{pass(71, 2, 200, 10, 170, 0), want{next: dt, why: "limit 20ms → 80ms: no convergence in 30s", downtime: 80 * time.Millisecond}},
			{pass(72, 3, 150, 10, 170, 0), want{}},
		}},
		{"a limit at the target: no downtime step", hypervisor.MigrateOptions{DowntimeLimit: DowntimeTarget}, []step{
			{pass(1, 1, 256, 10, 170, 0), want{}}, {pass(2, 2, 256, 10, 170, 0), want{}}, {pass(3, 3, 256, 10, 170, 0), want{}},
			{pass(4, 4, 256, 10, 170, 0), want{next: ac, throttle: throttleSaturated}},
		}},
		{"no escalation: fail at the timeout only", hypervisor.MigrateOptions{NoEscalation: true, Timeout: time.Minute}, []step{
			{pass(1, 1, 256, 170, 170, 0), want{}}, {pass(2, 2, 256, 170, 170, 0), want{}}, {pass(3, 3, 256, 170, 170, 0), want{}},
			{pass(59, 50, 256, 170, 170, 0), want{}}, {pass(60, 51, 256, 170, 170, 0), want{next: "fail", why: "within 1m0s"}},
		}},
		{"timeout", hypervisor.MigrateOptions{Timeout: 5 * time.Second}, []step{
			{pass(1, 1, 256, 10, 170, 0), want{}}, {pass(6, 2, 100, 10, 170, 0), want{next: "fail"}},
		}},
	} {
		c := newConverger(migrateDefaults(tc.opts), true)
		for i, st := range tc.steps {
			d, ok := c.observe(st.s)
			got := want{}
			if ok {
				got = want{next: d.next, downtime: d.downtime, bandwidth: d.bandwidth, throttle: d.throttle, ceiling: d.ceiling, postcopy: d.postcopy}
				if d.fail {
					got.next = "fail"
				}
			}
			w := st.w
			if got.next != w.next || !strings.Contains(d.reason, w.why) || (w.next != "fail" &&
				(got.downtime != w.downtime || got.bandwidth != w.bandwidth || got.throttle != w.throttle || got.ceiling != w.ceiling || got.postcopy != w.postcopy)) {
				t.Fatalf("%s: step %d: got %+v (reason %q), want %+v", tc.name, i, got, d.reason, w)
			}
		}
	}
}

// TestCapLimit: QEMU is never given the whole cap: a fifth of it, at most
// 25 ms, is kept for what the downtime adds to sending memory.
func TestCapLimit(t *testing.T) {
	for _, tc := range []struct{ cap, want time.Duration }{
		{300 * time.Millisecond, 275 * time.Millisecond},
		{100 * time.Millisecond, 80 * time.Millisecond},
		{50 * time.Millisecond, 40 * time.Millisecond},
		{20 * time.Millisecond, 16 * time.Millisecond},
		{time.Millisecond, time.Millisecond},
		{2 * time.Second, 1975 * time.Millisecond},
	} {
		if got := capLimit(tc.cap); got != tc.want {
			t.Errorf("capLimit(%v) = %v, want %v", tc.cap, got, tc.want)
		}
	}
}

// TestStartDowntime: pre-copy starts at the smaller of DowntimeTarget and
// the cap's limit; at the cap's limit without the low start; at the
// caller's limit as it is without escalation (QEMU's behaviour).
func TestStartDowntime(t *testing.T) {
	for _, tc := range []struct {
		opts     hypervisor.MigrateOptions
		lowStart bool
		want     time.Duration
	}{
		{hypervisor.MigrateOptions{}, true, DowntimeTarget},
		{hypervisor.MigrateOptions{DowntimeLimit: 100 * time.Millisecond}, true, DowntimeTarget},
		{hypervisor.MigrateOptions{DowntimeLimit: DowntimeTarget}, true, 16 * time.Millisecond},
		{hypervisor.MigrateOptions{DowntimeLimit: 5 * time.Millisecond}, true, 4 * time.Millisecond},
		{hypervisor.MigrateOptions{}, false, 275 * time.Millisecond},
		{hypervisor.MigrateOptions{NoEscalation: true}, true, DefaultDowntimeLimit},
		{hypervisor.MigrateOptions{NoEscalation: true, DowntimeLimit: 500 * time.Millisecond}, true, 500 * time.Millisecond},
	} {
		if got := startDowntime(migrateDefaults(tc.opts), tc.lowStart); got != tc.want {
			t.Errorf("startDowntime(%+v, lowStart %v) = %v, want %v", tc.opts, tc.lowStart, got, tc.want)
		}
	}
	// Without the low start there is no downtime step to take.
	c := newConverger(migrateDefaults(hypervisor.MigrateOptions{}), false)
	c.observe(migSample{Elapsed: time.Second, Iteration: 1, Remaining: 256 << 20, DirtyRate: 170 << 20, Bandwidth: 170 << 20})
	if d, ok := c.observe(migSample{Elapsed: 2 * time.Second, Iteration: 2, Remaining: 250 << 20, DirtyRate: 170 << 20, Bandwidth: 170 << 20}); !ok || d.downtime != 0 || d.next != hypervisor.MigrationStageAutoConverge {
		t.Errorf("no low start: first escalation %+v, %v; want auto-converge without a downtime step", d, ok)
	}
	for _, tc := range []struct {
		accel, version string
		want           bool
	}{
		{"kvm", "7.2.22", true}, {"kvm", "", true},
		{"tcg", "7.2.22", false}, {"tcg", "8.2.2", false}, {"tcg", "", false}, {"tcg", "junk", false},
		{"tcg", "9.0.0", true}, {"tcg", "10.0.2", true},
	} {
		if got := lowStartSafe(tc.accel, tc.version); got != tc.want {
			t.Errorf("lowStartSafe(%q, %q) = %v, want %v", tc.accel, tc.version, got, tc.want)
		}
	}
	if DowntimeTarget >= DefaultDowntimeLimit {
		t.Fatalf("DowntimeTarget %v must stay below the default limit %v", DowntimeTarget, DefaultDowntimeLimit)
	}
}

// TestMultifdKeepsALargerReserve: over several channels the downtime
// limit QEMU is given stays a quarter of the cap (at most 75 ms) under
// it, whatever the escalation does; a single stream keeps 25 ms.
func TestMultifdKeepsALargerReserve(t *testing.T) {
	for _, tc := range []struct {
		cap, single, multi time.Duration
	}{
		{300 * time.Millisecond, 275 * time.Millisecond, 225 * time.Millisecond},
		{1000 * time.Millisecond, 975 * time.Millisecond, 925 * time.Millisecond},
		{100 * time.Millisecond, 80 * time.Millisecond, 75 * time.Millisecond},
	} {
		if got := capLimit(tc.cap); got != tc.single {
			t.Errorf("capLimit(%v) = %v, want %v", tc.cap, got, tc.single)
		}
		if got := multifdCapLimit(tc.cap); got != tc.multi {
			t.Errorf("multifdCapLimit(%v) = %v, want %v", tc.cap, got, tc.multi)
		}
	}
	c := newConverger(migrateDefaults(hypervisor.MigrateOptions{}), false)
	c.overChannels()
	if c.downtime != 225*time.Millisecond {
		t.Fatalf("over channels pre-copy starts at %v, want 225ms", c.downtime)
	}
	// a busy guest walks the ladder: no step sets more than the reserve allows
	rem := int64(400 << 20)
	for i := 1; i < 60; i++ {
		d, ok := c.observe(migSample{Elapsed: time.Duration(i) * 500 * time.Millisecond, Iteration: int64(i), Remaining: rem, DirtyRate: 300 << 20, Bandwidth: 200 << 20})
		if ok && d.downtime > 225*time.Millisecond {
			t.Fatalf("step %d set downtime-limit %v over channels, above 225ms", i, d.downtime)
		}
		if d.fail {
			break
		}
	}
	// the defaults' fixed limit is not touched
	f := newConverger(migrateDefaults(hypervisor.MigrateOptions{NoEscalation: true}), false)
	f.overChannels()
	if f.downtime != DefaultDowntimeLimit {
		t.Fatalf("a fixed migration over channels: %v, want %v", f.downtime, DefaultDowntimeLimit)
	}
}
