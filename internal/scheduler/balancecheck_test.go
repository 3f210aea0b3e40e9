package scheduler

import (
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// TestBalanceCheckAnswersByThePlannersIndices: the hook built from the
// planner's host and VM lists (in an order of their own, not the
// snapshot's) answers every (VM, host) pair as CheckMove does for that
// VM leaving the host its status names, and a VM may always stay home.
func TestBalanceCheckAnswersByThePlannersIndices(t *testing.T) {
	s := newSched(t)
	hosts := []model.Host{
		MakeHost().Name("h1").Label("region", "eu").Obj(),
		MakeHost().Name("h2").Label("region", "us").Obj(),
		MakeHost().Name("h3").Label("region", "eu").Memory(4).Obj(),
	}
	vm := func(key, host string, b *vmBuilder) *model.VM {
		r := b.Req()
		project, name, _ := strings.Cut(key, "/")
		return &model.VM{Meta: model.Meta{Project: project, Name: name}, Spec: *r.Spec, Status: model.VMStatus{Host: host}}
	}
	vms := []*model.VM{
		vm("p/eu", "h1", MakeVM("p/eu").Require("region", "eu")),
		vm("p/a1", "h1", MakeVM("p/a1").Group("g", model.AntiAffinityHard)),
		vm("p/a2", "h2", MakeVM("p/a2").Group("g", model.AntiAffinityHard)),
		vm("p/big", "h2", MakeVM("p/big").Memory(8)),
	}
	var allocs []model.Allocation
	for _, h := range []string{"h1", "h2"} {
		a := model.Allocation{Host: h, VMs: map[string]bool{}}
		for _, v := range vms {
			if v.Status.Host == h {
				a.AddVM(v.Key(), &v.Spec)
			}
		}
		allocs = append(allocs, a)
	}
	snap := newSnap(t, hosts, allocs...)
	planner := []model.Host{hosts[2], hosts[0], hosts[1]} // the planner's own order
	mc := s.BalanceCheck(snap, planner, vms)
	refused := 0
	for v, m := range vms {
		for h, host := range planner {
			want := host.Name == m.Status.Host
			if !want {
				want = s.CheckMove(snap, Request{Key: m.Key(), Spec: &m.Spec}, m.Status.Host, host.Name) == ""
			}
			if got := mc.Feasible(v, h); got != want {
				t.Errorf("%s → %s: Feasible = %v (%s), CheckMove says %v", m.Key(), host.Name, got, mc.Why(v, h), want)
			}
			if !want {
				refused++
			}
		}
	}
	// eu → h2 (labels), a1 → h2 and a2 → h1 (anti-affinity), big → h3 (memory).
	if refused != 4 {
		t.Errorf("%d moves refused, want 4: the case does not exercise the rules", refused)
	}
}
