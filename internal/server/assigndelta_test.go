package server

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// A delta poll answers only the VMs changed after its revision and
// those that left the host, is not woken by the host's own status
// report (a full poll is), and an agent that does not ask for deltas
// still gets every VM.
func TestAssignmentsDelta(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	admin := ts.AdminToken()
	a := joinAgent(t, ts, "h1")
	a.beat()
	place := func(name string) {
		t.Helper()
		ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq(name), nil)
		if _, err := ts.Repo().UpdateVM(ctx, "default", name, func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = "h1", model.PhaseCreating
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	names := func(as api.Assignments) []string {
		var out []string
		for _, v := range as.VMs {
			out = append(out, v.Name)
		}
		return out
	}
	poll := func(query string) api.Assignments {
		t.Helper()
		var as api.Assignments
		if code := a.do("GET", "/agent/v1/assignments?"+query, nil, &as); code != 200 {
			t.Fatalf("poll %s: %d", query, code)
		}
		return as
	}
	place("v1")
	place("v2")
	full := poll("delta=true") // a first poll (after 0) is answered in full
	if full.Delta || !slices.Equal(names(full), []string{"v1", "v2"}) {
		t.Fatalf("first poll: delta %v, VMs %v", full.Delta, names(full))
	}
	quiet := poll("after=" + itoa(full.Revision) + "&wait=10ms&delta=true")
	if !quiet.Delta || len(quiet.VMs) != 0 || len(quiet.Removed) != 0 {
		t.Fatalf("a delta of nothing: %+v", quiet)
	}

	// the host's own report wakes the full poll, not the delta one
	type answer struct {
		as   api.Assignments
		code int
	}
	deltaC, fullC := make(chan answer, 1), make(chan answer, 1)
	go func() {
		var as api.Assignments
		code := a.do("GET", "/agent/v1/assignments?after="+itoa(quiet.Revision)+"&wait=30s&delta=true", nil, &as)
		deltaC <- answer{as, code}
	}()
	go func() {
		var as api.Assignments
		code := a.do("GET", "/agent/v1/assignments?after="+itoa(quiet.Revision)+"&wait=30s", nil, &as)
		fullC <- answer{as, code}
	}()
	time.Sleep(50 * time.Millisecond) // both polls wait (if not, the test still holds: see below)
	var vm model.VM
	if code := a.do("PUT", "/agent/v1/vms/default/v1/status", api.VMReport{Phase: model.PhaseRunning}, &vm); code != 200 {
		t.Fatalf("report: %d", code)
	}
	f := <-fullC
	if f.code != 200 || f.as.Delta || !slices.Equal(names(f.as), []string{"v1", "v2"}) {
		t.Fatalf("full poll after the report: %d delta %v VMs %v", f.code, f.as.Delta, names(f.as))
	}
	place("v3")
	d := <-deltaC
	// Had the report woken it, the answer could not hold v3, placed after
	// the report's answer.
	if d.code != 200 || !d.as.Delta || !slices.Equal(names(d.as), []string{"v1", "v3"}) {
		t.Fatalf("delta poll: %d delta %v VMs %v, want v1 (reported) and v3 (placed), not woken by the report alone", d.code, d.as.Delta, names(d.as))
	}
	if d.as.VMs[0].Status.Phase != model.PhaseRunning {
		t.Fatalf("v1 in the delta: %+v", d.as.VMs[0].Status)
	}

	// a VM that leaves the host is named in Removed
	ts.mustCall(202, "DELETE", "/api/v1/vms/v2", admin, nil, nil)
	if code := a.do("PUT", "/agent/v1/vms/default/v2/status", api.VMReport{Gone: true}, nil); code != 204 {
		t.Fatalf("gone: %d", code)
	}
	gone := poll("after=" + itoa(d.as.Revision) + "&wait=10ms&delta=true")
	if !gone.Delta || len(gone.VMs) != 0 || !slices.Equal(gone.Removed, []string{"default/v2"}) {
		t.Fatalf("after v2 left: delta %v VMs %v removed %v", gone.Delta, names(gone), gone.Removed)
	}
	// from before the deletion mark, the marked VM is gone too (not listed as changed)
	both := poll("after=" + itoa(d.as.Revision-1) + "&wait=0s&delta=true")
	if !both.Delta || !slices.Contains(both.Removed, "default/v2") || slices.Contains(names(both), "v2") {
		t.Fatalf("a delta from before: VMs %v removed %v", names(both), both.Removed)
	}
	// without delta=true: every VM, as before
	if old := poll("after=" + itoa(gone.Revision) + "&wait=0s"); old.Delta || !slices.Equal(names(old), []string{"v1", "v3"}) || old.Removed != nil {
		t.Fatalf("a poll without delta: %+v", old)
	}
}

// A poll from before what the view remembers of the VMs that left a
// host is answered in full.
func TestLeftHostsFloor(t *testing.T) {
	var l leftHosts
	l.reset(10)
	if l.since("h") != 10 {
		t.Fatalf("since after a re-list at 10: %d", l.since("h"))
	}
	for i := range maxLeft + 1 {
		l.add("h", "/vpool/vms/p/v"+itoa(int64(i)), int64(100+i))
	}
	if s := l.since("h"); s <= 100 || s >= int64(100+maxLeft) {
		t.Fatalf("since after forgetting the older half: %d", s)
	}
	if got := l.after("h", int64(99+maxLeft)); !slices.Equal(got, []string{"p/v" + itoa(int64(maxLeft))}) {
		t.Fatalf("left after the last but one: %v", got)
	}
	l.back("h", "/vpool/vms/p/v"+itoa(int64(maxLeft)))
	if got := l.after("h", int64(99+maxLeft)); len(got) != 0 {
		t.Fatalf("a VM back on the host is still named: %v", got)
	}
	if l.since("other") != 10 {
		t.Fatalf("another host's floor: %d", l.since("other"))
	}
}

func TestReportOnly(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := func() *model.VM {
		return &model.VM{Meta: model.Meta{Name: "v", Project: "p", UID: "u", Revision: 5},
			Spec:   model.VMSpec{VCPUs: 1, Power: model.PowerRunning},
			Status: model.VMStatus{Host: "h1", Phase: model.PhaseCreating, ObservedAt: t0}}
	}
	for _, tc := range []struct {
		name string
		edit func(v *model.VM)
		want bool
	}{
		{"a report", func(v *model.VM) {
			v.Status.Phase, v.Status.ObservedAt, v.Revision = model.PhaseRunning, t0.Add(time.Second), 9
			v.Status.Usage.Memory = 5
		}, true},
		{"the same observation time", func(v *model.VM) { v.Status.Phase = model.PhaseFailed }, false},
		{"a report and a spec change", func(v *model.VM) {
			v.Status.ObservedAt, v.Spec.Power = t0.Add(time.Second), model.PowerStopped
		}, false},
		{"a report and a deletion", func(v *model.VM) {
			d := t0
			v.Status.ObservedAt, v.DeletedAt = t0.Add(time.Second), &d
		}, false},
		{"a report and a migration", func(v *model.VM) {
			v.Status.ObservedAt, v.Status.Migration = t0.Add(time.Second), "m1"
		}, false},
		{"a report and a resize", func(v *model.VM) {
			v.Status.ObservedAt, v.Status.Resize = t0.Add(time.Second), &model.ResizeOp{}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := base()
			tc.edit(cur)
			if got := reportOnly(base(), cur); got != tc.want {
				t.Fatalf("reportOnly = %v, want %v", got, tc.want)
			}
		})
	}
	if reportOnly(nil, base()) || reportOnly(base(), nil) {
		t.Fatal("a created or deleted VM is not a report")
	}
}
