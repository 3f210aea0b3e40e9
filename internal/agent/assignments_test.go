package agent

import (
	"maps"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// A delta answer changes only the VMs it names and drops those it says
// left; a full answer replaces everything; an answer older than the VM
// a report's answer gave does not roll it back.
func TestSetAssignmentsDelta(t *testing.T) {
	a := &Agent{assigned: map[string]*model.VM{}, vms: map[string]*vmState{}, kick: make(chan struct{}, 1)}
	vm := func(name string, rev int64) model.VM {
		return model.VM{Meta: model.Meta{Name: name, Project: "default", UID: "u-" + name, Revision: rev}}
	}
	held := func() map[string]int64 {
		out := map[string]int64{}
		for k, v := range a.assigned {
			out[k] = v.Revision
		}
		return out
	}
	steps := []struct {
		name string
		as   api.Assignments
		want map[string]int64
	}{
		{"full", api.Assignments{Revision: 5, VMs: []model.VM{vm("v1", 4), vm("v2", 5)}},
			map[string]int64{"default/v1": 4, "default/v2": 5}},
		{"delta: v1 changed, v2 left, v3 came", api.Assignments{Revision: 8, Delta: true, VMs: []model.VM{vm("v1", 7), vm("v3", 8)}, Removed: []string{"default/v2"}},
			map[string]int64{"default/v1": 7, "default/v3": 8}},
		{"empty delta", api.Assignments{Revision: 9, Delta: true}, map[string]int64{"default/v1": 7, "default/v3": 8}},
		{"full again", api.Assignments{Revision: 10, VMs: []model.VM{vm("v3", 8)}}, map[string]int64{"default/v3": 8}},
	}
	for _, s := range steps {
		a.setAssignments(s.as)
		if got := held(); !maps.Equal(got, s.want) {
			t.Fatalf("%s: holds %v, want %v", s.name, got, s.want)
		}
	}
	newer := vm("v3", 12) // as a report's answer gave it
	a.assigned["default/v3"] = &newer
	a.setAssignments(api.Assignments{Revision: 11, Delta: true, VMs: []model.VM{vm("v3", 11)}})
	if got := a.assigned["default/v3"].Revision; got != 12 {
		t.Fatalf("an older answer rolled v3 back to revision %d", got)
	}
}
