package scheduler

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// TestFitsAgreesWithTheFitFilter: Fits (for callers without a snapshot)
// and the fit filter are one rule: on random hosts, allocations and VMs
// they agree on every verdict and every reason.
func TestFitsAgreesWithTheFitFilter(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	s, err := New(model.DefaultPolicy(), WithPlugins("hoststate", "fit"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		h := MakeHost().Name("h").CPUs(1+rng.IntN(16)).Memory(1+rng.Int64N(64)).Disk(10+rng.Int64N(500)).
			Ratios([]float64{0, 1, 2.5}[rng.IntN(3)], []float64{0, 1.5}[rng.IntN(2)], 0).Obj()
		a := MakeAlloc("h").Used(rng.IntN(40), rng.Int64N(64), rng.Int64N(300)).Reserved(rng.IntN(8000), rng.Int64N(16)).VMs("p/x").Obj()
		spec := &model.VMSpec{VCPUs: 1 + rng.IntN(8), Memory: model.Bytes(rng.Int64N(16 * GiB)),
			Disks:    []model.Disk{{Name: "root", Size: model.Bytes(rng.Int64N(100 * GiB))}},
			Controls: model.Controls{CPUReservation: rng.IntN(3) * 1000, MemoryReservation: model.Bytes(rng.Int64N(3) * GiB)}}
		why := Fits(&h, a, model.DefaultPolicy(), spec)
		d := s.Check(h, a, Request{Key: "p/v", Spec: spec})
		if (why == "") != d.Placed() {
			t.Fatalf("case %d: Fits %q, filter placed %v (%s)", i, why, d.Placed(), d.Explanation.Summary)
		}
		if why != "" && !strings.Contains(d.Explanation.Summary, why) {
			t.Fatalf("case %d: Fits says %q, the filter %q", i, why, d.Explanation.Summary)
		}
	}
}

func TestAllocatable(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    model.Host
		pol  model.Policy
		want model.Resources
	}{
		{"defaults", MakeHost().CPUs(3).Memory(8).Disk(100).Obj(), model.DefaultPolicy(), model.Resources{CPUs: 12, Memory: 8 * model.GiB, Disk: 100 * model.GiB}},
		{"fractional CPU ratio rounds down", MakeHost().CPUs(3).Memory(8).Disk(100).Ratios(1.5, 0, 0).Obj(), model.DefaultPolicy(),
			model.Resources{CPUs: 4, Memory: 8 * model.GiB, Disk: 100 * model.GiB}},
		{"ratios capped", MakeHost().CPUs(1).Memory(1).Disk(1).Ratios(100, 5, 30).Obj(), model.DefaultPolicy(),
			model.Resources{CPUs: 64, Memory: 3 * model.GiB, Disk: 20 * model.GiB}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Allocatable(&tc.h, tc.pol); got != tc.want {
				t.Errorf("Allocatable = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestBalancersTakeTheirReserve: a host serving load balancers has their
// reserve (model.LBReserveCPUMilli, LBReserveMemory each) taken off what
// may be allocated there, in Allocatable, Fits and the fit filter alike.
func TestBalancersTakeTheirReserve(t *testing.T) {
	s, err := New(model.DefaultPolicy(), WithPlugins("hoststate", "fit"))
	if err != nil {
		t.Fatal(err)
	}
	vm := func(cpus int, mem model.Bytes, cpuRes int) *model.VMSpec {
		return &model.VMSpec{VCPUs: cpus, Memory: mem, Controls: model.Controls{CPUReservation: cpuRes}}
	}
	for _, tc := range []struct {
		name      string
		balancers int
		spec      *model.VMSpec
		fits      bool
	}{
		{"all the CPUs, no balancer", 0, vm(2, model.GiB, 0), true},
		{"all the CPUs, one balancer", 1, vm(2, model.GiB, 0), false},
		{"all the memory, no balancer", 0, vm(1, 4*model.GiB, 0), true},
		{"all the memory, one balancer", 1, vm(1, 4*model.GiB, 0), false},
		{"memory left by two balancers", 2, vm(1, 4*model.GiB-2*model.LBReserveMemory, 0), true},
		{"a full CPU reservation next to a balancer", 1, vm(1, model.GiB, 2000), false},
		{"what four balancers leave", 4, vm(1, model.GiB, 1000), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := MakeHost().Name("h").CPUs(2).Memory(4).Disk(100).Ratios(1, 1, 0).Obj()
			h.Balancers = tc.balancers
			a := MakeAlloc("h").Obj()
			why := Fits(&h, a, model.DefaultPolicy(), tc.spec)
			d := s.Check(h, a, Request{Key: "p/v", Spec: tc.spec})
			if (why == "") != tc.fits || d.Placed() != tc.fits {
				t.Errorf("Fits %q, filter placed %v (%s); want fits %v", why, d.Placed(), d.Explanation.Summary, tc.fits)
			}
		})
	}
	h := MakeHost().CPUs(4).Memory(8).Disk(100).Obj()
	h.Balancers = 4
	want := model.Resources{CPUs: 15, Memory: 8*model.GiB - 4*model.LBReserveMemory, Disk: 100 * model.GiB}
	if got := Allocatable(&h, model.DefaultPolicy()); got != want {
		t.Errorf("Allocatable with four balancers = %+v, want %+v", got, want)
	}
}
