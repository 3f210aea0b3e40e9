package controller

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

func host(name string, cpus int, mem model.Bytes) model.Host {
	return model.Host{Meta: model.Meta{Name: name}, Capacity: model.Resources{CPUs: cpus, Memory: mem, Disk: model.TiB}, State: model.HostReady}
}

func vmOf(vcpus int, mem model.Bytes, mut ...func(*model.VM)) *model.VM {
	vm := &model.VM{Meta: model.Meta{Name: "v", Project: "p"}, Spec: model.VMSpec{VCPUs: vcpus, Memory: mem}}
	for _, f := range mut {
		f(vm)
	}
	return vm
}

func TestFirstFit(t *testing.T) {
	down := host("a-down", 64, 64*model.GiB)
	down.State = model.HostDown
	cordoned := host("b-cordoned", 64, 64*model.GiB)
	cordoned.Cordoned = true
	eu := host("d-eu", 8, 8*model.GiB)
	eu.Labels = map[string]string{"region": "eu"}
	small := host("c-small", 2, 2*model.GiB)
	full := host("e-full", 8, 8*model.GiB)
	hosts := []model.Host{down, cordoned, small, eu, full}
	allocs := map[string]model.Allocation{"e-full": {Used: model.Resources{CPUs: 32, Memory: 7 * model.GiB}}}
	pol := model.DefaultPolicy()

	tests := []struct {
		name     string
		vm       *model.VM
		want     string
		explains []string
	}{
		{"first ready host that fits", vmOf(2, 2*model.GiB), "c-small", nil},
		{"skips too small", vmOf(4, 4*model.GiB), "d-eu", nil},
		{"required labels", vmOf(1, model.GiB, func(v *model.VM) { v.Spec.Placement.RequiredLabels = map[string]string{"region": "us"} }), "",
			[]string{"missing required labels region=us"}},
		{"pinned host", vmOf(1, model.GiB, func(v *model.VM) { v.Spec.Placement.Host = "e-full" }), "",
			[]string{"insufficient CPU"}},
		{"cpu overcommit 4x", vmOf(20, model.GiB), "d-eu", nil},
		{"memory never overcommitted at ratio 1", vmOf(1, 9*model.GiB), "", []string{"insufficient memory", "2 hosts: host not ready or cordoned"}},
		{"reservation covered 1:1", vmOf(12, model.GiB, func(v *model.VM) { v.Spec.Controls.CPUReservation = 9000 }), "",
			[]string{"reservation"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, expl := FirstFit{}.Place(&Snapshot{Hosts: hosts, Allocs: allocs, Policy: pol}, tt.vm)
			if got != tt.want {
				t.Fatalf("placed on %q, want %q (%s)", got, tt.want, expl.Summary)
			}
			if expl == nil || expl.Summary == "" || expl.Hosts != len(hosts) {
				t.Fatalf("explanation %+v", expl)
			}
			for _, s := range tt.explains {
				if !strings.Contains(expl.Summary, s) {
					t.Errorf("summary %q does not say %q", expl.Summary, s)
				}
			}
		})
	}
}

func TestFirstFitNoHosts(t *testing.T) {
	got, expl := FirstFit{}.Place(&Snapshot{Policy: model.DefaultPolicy()}, vmOf(1, model.GiB))
	if got != "" || expl.Summary != "no hosts in the pool" {
		t.Errorf("got %q, %q", got, expl.Summary)
	}
}

func TestEffectiveRatios(t *testing.T) {
	tests := []struct {
		name   string
		host   model.Ratios
		policy model.Ratios
		want   model.Ratios
	}{
		{"defaults", model.Ratios{}, model.Ratios{}, model.Ratios{CPU: 4, Memory: 1, Disk: 1}},
		{"policy", model.Ratios{}, model.Ratios{CPU: 2, Memory: 1.5}, model.Ratios{CPU: 2, Memory: 1.5, Disk: 1}},
		{"host override", model.Ratios{Memory: 3}, model.Ratios{CPU: 2, Memory: 1.5}, model.Ratios{CPU: 2, Memory: 3, Disk: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := model.Host{Ratios: tt.host}
			if got := EffectiveRatios(&h, model.Policy{Ratios: tt.policy}); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	_, before, err := e.st.List(t.Context(), "/")
	if err != nil {
		t.Fatal(err)
	}
	d := NewDryRunner(e.st, nil, e.clock.Now)
	tests := []struct {
		name string
		vm   *model.VM
		fits bool
	}{
		{"fits", vmOf(2, 2*model.GiB), true},
		{"too big", vmOf(2, 8*model.GiB), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := d.Place(t.Context(), tt.vm)
			if err != nil {
				t.Fatal(err)
			}
			if res.Fits != tt.fits || (res.Host == "h1") != tt.fits || res.Explanation == nil || res.Explanation.Summary == "" {
				t.Errorf("got %+v (%+v)", res, res.Explanation)
			}
		})
	}
	if _, after, _ := e.st.List(t.Context(), "/"); after != before {
		t.Errorf("store revision moved from %d to %d", before, after)
	}
}

// TestDryRunBatch: a batch dry run answers as the batch would be placed:
// each VM sees the ones before it, a hard group is all or nothing.
func TestDryRunBatch(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	e.addHost("h2", 4, 4*model.GiB, nil)
	_, before, err := e.st.List(t.Context(), "/")
	if err != nil {
		t.Fatal(err)
	}
	d := NewDryRunner(e.st, nil, e.clock.Now)
	member := func(name string) *model.VM {
		vm := vmOf(1, model.GiB)
		vm.Name, vm.Project = name, "p"
		vm.Spec.Placement = model.Placement{AffinityGroup: "web", Affinity: model.AntiAffinityHard}
		return vm
	}
	tests := []struct {
		name  string
		vms   []*model.VM
		hosts []string
	}{
		{"two fit apart", []*model.VM{member("a"), member("b")}, []string{"h1", "h2"}},
		{"three all or nothing", []*model.VM{member("a"), member("b"), member("c")}, []string{"", "", ""}},
		{"each sees the one before", []*model.VM{vmOf(4, 3*model.GiB), vmOf(4, 3*model.GiB), vmOf(4, 3*model.GiB)}, []string{"h1", "h2", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, vm := range tt.vms {
				if vm.Name == "v" {
					vm.Name, vm.Project = fmt.Sprintf("v%d", i), "p"
				}
			}
			res, err := d.PlaceBatch(t.Context(), tt.vms)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range res {
				got = append(got, r.Host)
				if r.Fits != (r.Host != "") || r.Explanation == nil || r.Explanation.Summary == "" {
					t.Errorf("answer %+v", r)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.hosts) {
				t.Errorf("hosts %q, want %q", got, tt.hosts)
			}
		})
	}
	if _, after, _ := e.st.List(t.Context(), "/"); after != before {
		t.Errorf("store revision moved from %d to %d", before, after)
	}
}
