package scaling

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

var t0 = time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC) // a Monday

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

func spec(min, max int, target float64) model.GroupSpec {
	return model.GroupSpec{Min: min, Max: max, TargetCPU: target, ScaleOutCooldown: 30, ScaleInCooldown: 300}
}

// in makes n in-service members at cpu percent each, started s ago.
func in(n int, cpu float64) []Member {
	var ms []Member
	for i := range n {
		ms = append(ms, Member{VM: "g-" + string(rune('a'+i)), State: model.GroupMemberInService, Phase: model.PhaseRunning,
			CPU: cpu, HasCPU: true, Since: t0.Add(-time.Hour + time.Duration(i)*time.Minute)})
	}
	return ms
}

func TestDecide(t *testing.T) {
	pending := Member{VM: "g-new", State: model.GroupMemberPending, Phase: model.PhaseCreating, Since: t0.Add(-10 * time.Second)}
	failedM := Member{VM: "g-bad", State: model.GroupMemberInService, Phase: model.PhaseFailed, Since: t0.Add(-2 * time.Hour)}
	goneM := Member{VM: "g-gone", State: model.GroupMemberInService, Since: t0.Add(-2 * time.Hour)}
	unknownM := Member{VM: "g-unk", State: model.GroupMemberInService, Phase: model.PhaseUnknown, Since: t0.Add(-2 * time.Hour)}
	tests := []struct {
		name      string
		spec      model.GroupSpec
		status    model.GroupStatus
		members   []Member
		desired   int
		create    int
		drain     []string
		kind      string
		reason    string
		out, inOK bool
	}{
		{name: "empty group reaches its minimum", spec: spec(2, 5, 0), desired: 2, create: 2, kind: KindBounds, reason: "raised to the minimum 2"},
		{name: "steady at target", spec: spec(1, 5, 60), status: model.GroupStatus{Desired: 3}, members: in(3, 62), desired: 3},
		{name: "within tolerance below", spec: spec(1, 5, 60), status: model.GroupStatus{Desired: 3}, members: in(3, 55), desired: 3},
		{name: "scale out at once to the tracking size", spec: spec(1, 10, 50), status: model.GroupStatus{Desired: 2},
			members: in(2, 100), desired: 4, create: 2, kind: KindScaleOut, reason: "over the target 50%: 2 → 4", out: true},
		{name: "scale out capped at max", spec: spec(1, 3, 50), status: model.GroupStatus{Desired: 2},
			members: in(2, 100), desired: 3, create: 1, kind: KindScaleOut, out: true},
		{name: "at max: nothing, says why", spec: spec(1, 2, 50), status: model.GroupStatus{Desired: 2},
			members: in(2, 100), desired: 2, reason: "at its maximum 2"},
		{name: "scale-out cooldown holds", spec: spec(1, 10, 50), status: model.GroupStatus{Desired: 2, LastScaleOut: at(-10 * time.Second)},
			members: in(2, 100), desired: 2, reason: "scale-out cooldown (20s left)"},
		{name: "scale-out cooldown over", spec: spec(1, 10, 50), status: model.GroupStatus{Desired: 2, LastScaleOut: at(-31 * time.Second)},
			members: in(2, 100), desired: 4, create: 2, kind: KindScaleOut, out: true},
		{name: "scale in by one", spec: spec(1, 10, 60), status: model.GroupStatus{Desired: 4},
			members: in(4, 10), desired: 3, drain: []string{"g-d"}, kind: KindScaleIn, reason: "under the target 60%: 4 → 3", inOK: true},
		{name: "scale in waits after a scale-out", spec: spec(1, 10, 60), status: model.GroupStatus{Desired: 4, LastScaleOut: at(-time.Minute)},
			members: in(4, 10), desired: 4, reason: "scale-in cooldown (4m0s left)"},
		{name: "scale in waits after a scale-in", spec: spec(1, 10, 60), status: model.GroupStatus{Desired: 4, LastScaleIn: at(-299 * time.Second)},
			members: in(4, 10), desired: 4, reason: "scale-in cooldown (1s left)"},
		{name: "scale in not below min", spec: spec(3, 10, 60), status: model.GroupStatus{Desired: 3}, members: in(3, 1), desired: 3},
		{name: "no scale in while a member starts", spec: spec(1, 10, 60), status: model.GroupStatus{Desired: 4},
			members: append(in(3, 5), pending), desired: 4, reason: "1 member(s) are still starting"},
		{name: "no metrics: size kept", spec: spec(1, 10, 60), status: model.GroupStatus{Desired: 2},
			members: []Member{{VM: "a", State: model.GroupMemberInService, Phase: model.PhaseRunning}, {VM: "b", State: model.GroupMemberInService, Phase: model.PhaseRunning}}, desired: 2},
		{name: "failed and vanished members replaced", spec: spec(1, 10, 0), status: model.GroupStatus{Desired: 3},
			members: append(in(1, 20), failedM, goneM), desired: 3, create: 2, drain: []string{"g-bad", "g-gone"}, kind: KindReplace, reason: "replacing failed member(s)"},
		{name: "an unreachable member is left alone", spec: spec(1, 10, 0), status: model.GroupStatus{Desired: 2},
			members: append(in(1, 20), unknownM), desired: 2},
		{name: "too many: pending go first", spec: spec(1, 10, 0), status: model.GroupStatus{Desired: 2},
			members: append(in(2, 20), pending), desired: 2, drain: []string{"g-new"}, kind: KindRepair, reason: "taking out 1"},
		{name: "too many: newest in service next", spec: spec(1, 10, 0), status: model.GroupStatus{Desired: 1},
			members: in(3, 20), desired: 1, drain: []string{"g-c", "g-b"}, kind: KindRepair},
		{name: "lowered to a new max", spec: spec(1, 2, 0), status: model.GroupStatus{Desired: 4},
			members: in(4, 20), desired: 2, drain: []string{"g-d", "g-c"}, kind: KindBounds, reason: "lowered to the maximum 2"},
		{name: "missing member recreated", spec: spec(1, 5, 0), status: model.GroupStatus{Desired: 3},
			members: in(2, 20), desired: 3, create: 1, kind: KindRepair, reason: "2 live member(s), desired 3: creating 1"},
		{name: "draining members do not count", spec: spec(1, 5, 0), status: model.GroupStatus{Desired: 2},
			members: append(in(2, 20), Member{VM: "old", State: model.GroupMemberDraining, Phase: model.PhaseRunning}), desired: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(Input{Now: t0, Spec: tc.spec, Status: tc.status, Members: tc.members})
			if p.Desired != tc.desired || p.Create != tc.create || !slices.Equal(p.Drain, tc.drain) || p.Kind != tc.kind {
				t.Fatalf("got desired %d create %d drain %v kind %q (%s); want %d %d %v %q",
					p.Desired, p.Create, p.Drain, p.Kind, p.Reason, tc.desired, tc.create, tc.drain, tc.kind)
			}
			if !strings.Contains(p.Reason, tc.reason) {
				t.Errorf("reason %q lacks %q", p.Reason, tc.reason)
			}
			if p.ScaledOut != tc.out || p.ScaledIn != tc.inOK {
				t.Errorf("cooldown clocks: out %v in %v, want %v %v", p.ScaledOut, p.ScaledIn, tc.out, tc.inOK)
			}
		})
	}
}

func TestBounds(t *testing.T) {
	s := model.GroupSpec{Min: 1, Max: 4, Schedules: []model.GroupSchedule{
		{Name: "office", Days: []string{"mon", "tue", "wed", "thu", "fri"}, Start: "08:00", End: "18:00", Min: 4, Max: 10},
		{Name: "night", Start: "22:00", End: "06:00", Min: 0, Max: 2},
	}}
	tests := []struct {
		name   string
		t      time.Time
		lo, hi int
		window string
	}{
		{"monday noon: office", t0, 4, 10, "office"},
		{"monday 18:00: end is exclusive", time.Date(2026, 11, 2, 18, 0, 0, 0, time.UTC), 1, 4, ""},
		{"saturday noon: spec", time.Date(2026, 11, 7, 12, 0, 0, 0, time.UTC), 1, 4, ""},
		{"night before midnight", time.Date(2026, 11, 2, 23, 0, 0, 0, time.UTC), 0, 2, "night"},
		{"night after midnight", time.Date(2026, 11, 3, 5, 59, 0, 0, time.UTC), 0, 2, "night"},
		{"another zone is read in UTC", time.Date(2026, 11, 2, 13, 0, 0, 0, time.FixedZone("x", 3600)), 4, 10, "office"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi, w := Bounds(s, tc.t)
			if lo != tc.lo || hi != tc.hi || !strings.Contains(w, tc.window) || (tc.window == "" && w != "") {
				t.Fatalf("got %d %d %q, want %d %d %q", lo, hi, w, tc.lo, tc.hi, tc.window)
			}
		})
	}
	// A schedule's bounds drive the decision.
	p := Decide(Input{Now: t0, Spec: s, Status: model.GroupStatus{Desired: 2}, Members: in(2, 10)})
	if p.Desired != 4 || p.Create != 2 || !strings.Contains(p.Reason, "schedule office") {
		t.Fatalf("schedule: %+v", p)
	}
}

// TestScaleOutFastInSlow replays a load step up and down through Decide
// as the controller would, members becoming ready at once: the group
// reaches its size in one step and comes back one member per cooldown.
func TestScaleOutFastInSlow(t *testing.T) {
	sp := spec(2, 10, 50)
	st := model.GroupStatus{Desired: 2}
	now := t0
	load := 400.0 // total CPU percent across the group
	step := func() Plan {
		n := st.Desired
		ms := in(n, load/float64(n))
		p := Decide(Input{Now: now, Spec: sp, Status: st, Members: ms})
		st.Desired = p.Desired
		stamp := now
		if p.ScaledOut {
			st.LastScaleOut = &stamp
		}
		if p.ScaledIn {
			st.LastScaleIn = &stamp
		}
		return p
	}
	if p := step(); p.Desired != 8 {
		t.Fatalf("step up: %+v", p)
	}
	load = 100
	var sizes []int
	for range 30 {
		now = now.Add(time.Minute)
		sizes = append(sizes, step().Desired)
	}
	// 8 → 2 needs 6 scale-ins, one per 5 minutes.
	if sizes[3] != 8 || sizes[4] != 7 || sizes[9] != 6 || sizes[28] != 3 || sizes[29] != 2 {
		t.Fatalf("scale-in path: %v", sizes)
	}
}
