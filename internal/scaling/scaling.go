// Package scaling decides the size of a scaling group and which members
// to add, replace or take out: target tracking on the members' mean CPU
// use with a tolerance band, cooldowns (scale out fast, scale in one
// member at a time and slowly), the bounds of the active schedule, and
// replacement of failed members. It is pure: a snapshot of the group and
// its members (with the time) in, a Plan out; the controller
// (internal/controller/groups.go) applies plans. It imports only
// internal/model and the standard library: no store, no clock, no I/O.
package scaling

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Tolerance is the band around the target within which the size stays:
// a mean within ±10 % of the target changes nothing, so that the group
// does not flap around it.
const Tolerance = 0.10

// Member is one member of the group as the controller sees it.
type Member struct {
	VM    string
	State string // model.GroupMember*
	// Phase is the VM's phase; "" when the VM no longer exists.
	Phase model.Phase
	// CPU is the VM's CPU use in percent of its vCPUs; HasCPU says
	// whether a fresh measurement exists.
	CPU    float64
	HasCPU bool
	Since  time.Time
}

// Input is what a decision reads.
type Input struct {
	Now     time.Time
	Spec    model.GroupSpec
	Status  model.GroupStatus
	Members []Member
}

// Decision kinds.
const (
	KindNone     = ""
	KindScaleOut = "scale-out"
	KindScaleIn  = "scale-in"
	KindBounds   = "bounds"
	KindReplace  = "replace"
	KindRepair   = "repair" // members created or removed to meet the desired size
)

// Plan is a decision: the desired size, how many members to create and
// which to take out (they drain from balancers before they are
// deleted), and why.
type Plan struct {
	Desired int
	Create  int
	Drain   []string
	// Replace lists failed members (also in Drain) replaced by new ones.
	Replace []string
	Kind    string
	Reason  string
	// CPU is the mean CPU use of the in-service members (HasCPU says it
	// was measured).
	CPU    float64
	HasCPU bool
	// ScaledOut and ScaledIn say the cooldown clocks restart at Now.
	ScaledOut, ScaledIn bool
}

// live reports whether a member counts toward the group's size.
func live(m Member) bool {
	return (m.State == model.GroupMemberPending || m.State == model.GroupMemberInService) && !failed(m)
}

// failed reports whether a member must be replaced: its VM is gone or
// failed. A VM whose host cannot reach it (unknown) is left alone, as
// everything else in vpool does.
func failed(m Member) bool {
	return m.Phase == "" || m.Phase == model.PhaseFailed || m.Phase == model.PhaseDeleting
}

// Decide returns the plan for one group at in.Now.
func Decide(in Input) Plan {
	lo, hi, window := Bounds(in.Spec, in.Now)
	p := Plan{Desired: in.Status.Desired}
	var reasons []string
	switch {
	case p.Desired < lo:
		p.Desired, p.Kind = lo, KindBounds
		reasons = append(reasons, fmt.Sprintf("raised to the minimum %d%s", lo, window))
	case p.Desired > hi:
		p.Desired, p.Kind = hi, KindBounds
		reasons = append(reasons, fmt.Sprintf("lowered to the maximum %d%s", hi, window))
	}
	var inService, pending []Member
	for _, m := range in.Members {
		switch {
		case (m.State == model.GroupMemberPending || m.State == model.GroupMemberInService) && failed(m):
			p.Replace = append(p.Replace, m.VM)
		case m.State == model.GroupMemberInService:
			inService = append(inService, m)
		case m.State == model.GroupMemberPending:
			pending = append(pending, m)
		}
	}
	if in.Spec.TargetCPU > 0 && p.Kind == KindNone {
		if r := track(in, &p, inService, len(pending), lo, hi); r != "" {
			reasons = append(reasons, r)
		}
	} else if mean, n := meanCPU(inService); n > 0 {
		p.CPU, p.HasCPU = mean, true
	}
	if len(p.Replace) > 0 {
		reasons = append(reasons, fmt.Sprintf("replacing failed member(s) %v", p.Replace))
		if p.Kind == KindNone {
			p.Kind = KindReplace
		}
	}
	p.Drain = append(p.Drain, p.Replace...)
	n := len(inService) + len(pending)
	switch {
	case n < p.Desired:
		p.Create = p.Desired - n
	case n > p.Desired:
		out := pickOut(pending, inService, n-p.Desired)
		p.Drain = append(p.Drain, out...)
		if p.Kind == KindNone {
			p.Kind = KindRepair
		}
	}
	if p.Kind == KindNone && p.Create > 0 {
		p.Kind = KindRepair
	}
	if p.Kind == KindRepair && len(reasons) == 0 {
		if p.Create > 0 {
			reasons = append(reasons, fmt.Sprintf("%d live member(s), desired %d: creating %d", n, p.Desired, p.Create))
		} else {
			reasons = append(reasons, fmt.Sprintf("%d live member(s), desired %d: taking out %d", n, p.Desired, n-p.Desired))
		}
	}
	p.Reason = join(reasons)
	return p
}

// track applies target tracking: out at once to the size that brings the
// mean back to the target (after the scale-out cooldown), in by one
// member (after the scale-in cooldown since any scaling, and only when
// no member is still starting).
func track(in Input, p *Plan, inService []Member, starting, lo, hi int) string {
	mean, n := meanCPU(inService)
	if n == 0 {
		return ""
	}
	p.CPU, p.HasCPU = mean, true
	target := in.Spec.TargetCPU
	// The size at which the same total load gives the target.
	want := int(math.Ceil(float64(len(inService)) * mean / target))
	out := time.Duration(in.Spec.ScaleOutCooldown) * time.Second
	inCD := time.Duration(in.Spec.ScaleInCooldown) * time.Second
	switch {
	case mean > target*(1+Tolerance) && want > p.Desired:
		if p.Desired >= hi {
			return fmt.Sprintf("mean CPU %.0f%% over the target %.0f%%, but the group is at its maximum %d", mean, target, hi)
		}
		if since := sinceOr(in.Now, in.Status.LastScaleOut); since < out {
			return fmt.Sprintf("mean CPU %.0f%% over the target %.0f%%: waiting for the scale-out cooldown (%s left)", mean, target, (out - since).Round(time.Second))
		}
		old := p.Desired
		p.Desired = min(want, hi)
		p.Kind, p.ScaledOut = KindScaleOut, true
		return fmt.Sprintf("mean CPU %.0f%% of %d in-service member(s) is over the target %.0f%%: %d → %d", mean, len(inService), target, old, p.Desired)
	case mean < target*(1-Tolerance) && want < p.Desired:
		if p.Desired <= lo {
			return ""
		}
		if starting > 0 {
			return fmt.Sprintf("mean CPU %.0f%% under the target %.0f%%, but %d member(s) are still starting", mean, target, starting)
		}
		since := min(sinceOr(in.Now, in.Status.LastScaleIn), sinceOr(in.Now, in.Status.LastScaleOut))
		if since < inCD {
			return fmt.Sprintf("mean CPU %.0f%% under the target %.0f%%: waiting for the scale-in cooldown (%s left)", mean, target, (inCD - since).Round(time.Second))
		}
		old := p.Desired
		p.Desired = max(old-1, lo)
		p.Kind, p.ScaledIn = KindScaleIn, true
		return fmt.Sprintf("mean CPU %.0f%% of %d in-service member(s) is under the target %.0f%%: %d → %d", mean, len(inService), target, old, p.Desired)
	}
	return ""
}

// sinceOr is the time since t, or forever when t is unset.
func sinceOr(now time.Time, t *time.Time) time.Duration {
	if t == nil {
		return time.Duration(math.MaxInt64)
	}
	return now.Sub(*t)
}

func meanCPU(ms []Member) (float64, int) {
	var sum float64
	n := 0
	for _, m := range ms {
		if m.HasCPU {
			sum += m.CPU
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}

// pickOut chooses k members to take out: those still starting first,
// then the newest in service (the oldest have warm caches and proven
// health); ties by name.
func pickOut(pending, inService []Member, k int) []string {
	order := func(ms []Member) []Member {
		c := append([]Member(nil), ms...)
		sort.Slice(c, func(i, j int) bool {
			if !c[i].Since.Equal(c[j].Since) {
				return c[i].Since.After(c[j].Since)
			}
			return c[i].VM > c[j].VM
		})
		return c
	}
	var out []string
	for _, m := range append(order(pending), order(inService)...) {
		if len(out) == k {
			break
		}
		out = append(out, m.VM)
	}
	return out
}

// Bounds returns the group's minimum and maximum at now: those of the
// first schedule whose window holds now, else the spec's; window says
// which schedule applies (" (schedule NAME)") or is empty.
func Bounds(spec model.GroupSpec, now time.Time) (lo, hi int, window string) {
	now = now.UTC()
	for _, s := range spec.Schedules {
		if inWindow(s, now) {
			return s.Min, s.Max, fmt.Sprintf(" (schedule %s)", s.Name)
		}
	}
	return spec.Min, spec.Max, ""
}

// inWindow reports whether t (UTC) is inside the schedule's window; a
// window across midnight belongs to the day it starts on.
func inWindow(s model.GroupSchedule, t time.Time) bool {
	start, ok1 := model.ClockMinutes(s.Start)
	end, ok2 := model.ClockMinutes(s.End)
	if !ok1 || !ok2 {
		return false
	}
	m := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	if start < end {
		return m >= start && m < end && onDay(s, day)
	}
	// Across midnight: the evening part today, the morning part of
	// yesterday's window.
	return (m >= start && onDay(s, day)) || (m < end && onDay(s, (day+6)%7))
}

func onDay(s model.GroupSchedule, d time.Weekday) bool {
	if len(s.Days) == 0 {
		return true
	}
	for _, name := range s.Days {
		if wd, ok := model.Weekday(name); ok && wd == d {
			return true
		}
	}
	return false
}

func join(rs []string) string {
	out := ""
	for i, r := range rs {
		if i > 0 {
			out += "; "
		}
		out += r
	}
	return out
}
