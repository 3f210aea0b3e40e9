package controller

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

func TestPlacesPendingVMs(t *testing.T) {
	for name, placer := range placers() {
		t.Run(name, func(t *testing.T) { testPlacesPendingVMs(t, placer()) })
	}
}

func testPlacesPendingVMs(t *testing.T, placer Placer) {
	e := newEnv(t)
	e.addHost("h1", 4, 8*model.GiB, nil)
	e.addHost("h2", 4, 8*model.GiB, nil)
	for i := range 6 {
		e.createVM(vmName(i), 2, 2*model.GiB)
	}
	cfg := e.config("a", nil)
	cfg.Placer = placer
	e.start(cfg)
	eventually(t, "all placed", func() bool {
		for _, vm := range e.vms() {
			if vm.Status.Host == "" {
				return false
			}
		}
		return true
	})
	for _, vm := range e.vms() {
		if ex := e.explanation(vm); vm.Status.Phase != model.PhaseCreating || ex == nil || ex.Chosen != vm.Status.Host || vm.Status.Explanation != nil {
			t.Errorf("%s: phase %s, explanation %+v (in the record: %+v)", vm.Name, vm.Status.Phase, ex, vm.Status.Explanation)
		}
	}
	if got := len(e.events("vm.phase")); got != 6 {
		t.Errorf("%d vm.phase events, want 6 (pending → creating, once each)", got)
	}
	e.checkAllocations()
}

func TestPendingVMPlacedWhenCapacityAppears(t *testing.T) {
	e := newEnv(t)
	e.addHost("small", 2, 2*model.GiB, nil)
	e.createVM("big", 4, 4*model.GiB)
	e.start(e.config("a", nil))

	eventually(t, "an explanation", func() bool { return e.vm("big").Status.Explanation != nil })
	vm := e.vm("big")
	if vm.Status.Host != "" || vm.Status.Phase != model.PhasePending {
		t.Fatalf("big: host %q phase %s, want pending with no host", vm.Status.Host, vm.Status.Phase)
	}
	t.Logf("explanation: %s", vm.Status.Explanation.Summary)
	rev := vm.Revision
	// Unrelated churn must not rewrite an unchanged explanation.
	for i := range 5 {
		e.createVM(fmt.Sprintf("tiny%d", i), 1, 256*model.MiB)
	}
	eventually(t, "tiny VMs placed", func() bool { return e.vm("tiny4").Status.Host != "" })
	if got := e.vm("big").Revision; got != rev {
		// capacity changed (tiny VMs took some), so a new summary is allowed;
		// but never more than one write per distinct summary
		if n := len(e.events(EventVMUnschedulable)); n != 1 {
			t.Errorf("%d unschedulable events, want 1", n)
		}
	}

	e.addHost("large", 8, 16*model.GiB, nil)
	eventually(t, "big placed", func() bool { return e.vm("big").Status.Host == "large" })
	e.checkAllocations()
}

func TestPendingVMPlacedWhenVMDeleted(t *testing.T) {
	e := newEnv(t)
	e.addHost("h", 4, 4*model.GiB, nil)
	e.createVM("first", 4, 4*model.GiB)
	e.start(e.config("a", nil))
	eventually(t, "first placed", func() bool { return e.vm("first").Status.Host == "h" })
	e.createVM("second", 4, 4*model.GiB)
	eventually(t, "second pending", func() bool { return e.vm("second").Status.Explanation != nil })
	if err := e.repo.FinishDeleteVM(context.Background(), "p", "first"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second placed", func() bool { return e.vm("second").Status.Host == "h" })
	e.checkAllocations()
}

// TestConcurrentSchedulersNeverOvercommit runs several schedulers, each
// with its own cache and no leadership fence, against one store: only the
// compare-and-swap keeps them honest.
func TestConcurrentSchedulersNeverOvercommit(t *testing.T) {
	for name, placer := range placers() {
		t.Run(name, func(t *testing.T) { testConcurrentSchedulers(t, placer) })
	}
}

func testConcurrentSchedulers(t *testing.T, newPlacer func() Placer) {
	e := newEnv(t)
	for i := range 5 {
		e.addHost(fmt.Sprintf("h%d", i), 8, 16*model.GiB, nil)
	}
	if _, err := e.repo.PutPolicy(context.Background(), model.Policy{Ratios: model.Ratios{CPU: 1, Memory: 1, Disk: 1}, Strategy: "binpack"}); err != nil {
		t.Fatal(err)
	}
	// 60 VMs of 1–3 vCPUs: more than the 40 CPUs, so some must stay pending.
	const n = 60
	for i := range n {
		e.createVM(vmName(i), 1+i%3, model.Bytes(1+i%2)*model.GiB)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 4 {
		cfg := e.config(fmt.Sprintf("s%d", i), nil)
		cfg.Placer = newPlacer()
		m := New(cfg)
		wg.Go(func() { _ = m.runControllers(ctx, m.newTerm()) })
	}
	eventually(t, "every VM placed or explained", func() bool {
		for _, vm := range e.vms() {
			if vm.Status.Host == "" && vm.Status.Explanation == nil {
				return false
			}
		}
		return true
	})
	cancel()
	wg.Wait()

	e.checkAllocations()
	placed, cpus := 0, 0
	for _, vm := range e.vms() {
		if vm.Status.Host != "" {
			placed++
			cpus += vm.Spec.VCPUs
		}
	}
	if placed == 0 || placed == n {
		t.Errorf("%d of %d VMs placed; want some but not all", placed, n)
	}
	if cpus > 40 {
		t.Errorf("%d vCPUs placed on 40 CPUs at ratio 1", cpus)
	}
	if got := len(e.events("vm.phase")); got != placed {
		t.Errorf("%d placement events for %d placed VMs: a placement was committed twice", got, placed)
	}
	t.Logf("placed %d VMs using %d of 40 CPUs", placed, cpus)
}

func placers() map[string]func() Placer {
	return map[string]func() Placer{
		"firstfit":  func() Placer { return FirstFit{} },
		"scheduler": func() Placer { return NewSchedulerPlacer() },
	}
}

func TestSchedulerPlacerHonoursConstraints(t *testing.T) {
	// The scheduler counts affinity groups per project ("project/group");
	// the allocations must carry them the same way for anti-affinity to
	// hold across commits.
	probe := model.Allocation{}
	state.AllocAdd(&probe, &model.VM{Meta: model.Meta{Name: "x", Project: "p"}, Spec: model.VMSpec{Placement: model.Placement{AffinityGroup: "g"}}})
	if probe.Groups["p/g"] == 0 {
		t.Fatalf("state.AllocAdd keys Allocation.Groups as %v, the scheduler looks up \"project/group\": the allocations and the scheduler disagree, so anti-affinity would not hold across commits", probe.Groups)
	}
	e := newEnv(t)
	e.addHost("eu1", 8, 16*model.GiB, map[string]string{"region": "eu"})
	e.addHost("eu2", 8, 16*model.GiB, map[string]string{"region": "eu"})
	e.addHost("us1", 32, 64*model.GiB, map[string]string{"region": "us"})
	for i := range 3 {
		vm := &model.VM{Meta: model.Meta{Name: vmName(i), Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB,
			Placement: model.Placement{RequiredLabels: map[string]string{"region": "eu"}, AffinityGroup: "web", Affinity: model.AntiAffinityHard}}}
		if _, err := e.repo.CreateVM(context.Background(), vm); err != nil {
			t.Fatal(err)
		}
	}
	cfg := e.config("a", nil)
	cfg.Placer = NewSchedulerPlacer()
	e.start(cfg)
	eventually(t, "two placed, one explained", func() bool {
		placed, explained := 0, 0
		for _, vm := range e.vms() {
			switch {
			case vm.Status.Host != "":
				placed++
			case vm.Status.Explanation != nil:
				explained++
			}
		}
		return placed == 2 && explained == 1
	})
	seen := map[string]bool{}
	for _, vm := range e.vms() {
		if h := vm.Status.Host; h != "" {
			if h == "us1" || seen[h] {
				t.Errorf("%s on %s breaks region=eu or anti-affinity (hosts so far %v)", vm.Name, h, seen)
			}
			seen[h] = true
		} else {
			t.Logf("pending: %s", vm.Status.Explanation.Summary)
		}
	}
	e.checkAllocations()
}

func TestSchedulerPlacerHonoursLabelsAndCapacity(t *testing.T) {
	e := newEnv(t)
	e.addHost("eu1", 4, 4*model.GiB, map[string]string{"region": "eu"})
	e.addHost("us1", 64, 256*model.GiB, map[string]string{"region": "us"})
	for i := range 6 {
		vm := &model.VM{Meta: model.Meta{Name: vmName(i), Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB,
			Placement: model.Placement{RequiredLabels: map[string]string{"region": "eu"}}}}
		if _, err := e.repo.CreateVM(context.Background(), vm); err != nil {
			t.Fatal(err)
		}
	}
	cfg := e.config("a", nil)
	cfg.Placer = NewSchedulerPlacer()
	e.start(cfg)
	eventually(t, "four placed on eu1, two explained", func() bool {
		placed, explained := 0, 0
		for _, vm := range e.vms() {
			switch {
			case vm.Status.Host == "eu1":
				placed++
			case vm.Status.Host == "" && vm.Status.Explanation != nil:
				explained++
			}
		}
		return placed == 4 && explained == 2
	})
	for _, vm := range e.vms() {
		if vm.Status.Host == "" {
			t.Logf("pending: %s", vm.Status.Explanation.Summary)
		}
	}
	e.checkAllocations()
}

func TestFaultyPlacerCannotOvercommit(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 1, 2*model.GiB, nil)
	for i := range 4 {
		e.createVM(vmName(i), 1, 1*model.GiB)
	}
	var errs atomic.Int64
	cfg := e.config("a", nil)
	cfg.ReconcileErrors = func(c string) {
		if c == "scheduling" {
			errs.Add(1)
		}
	}
	cfg.Placer = PlacerFunc(func(s *Snapshot, vm *model.VM) (string, *model.Explanation) {
		return "h1", &model.Explanation{Chosen: "h1", Summary: "always h1"}
	})
	e.start(cfg)
	eventually(t, "errors reported", func() bool { return errs.Load() > 0 })
	e.checkAllocations()
	placed := 0
	for _, vm := range e.vms() {
		if vm.Status.Host != "" {
			placed++
		}
	}
	// 1 CPU × 4.0 ratio = 4 vCPUs, but 2 GiB × 1.0 = 2 VMs of 1 GiB
	if placed != 2 {
		t.Errorf("%d VMs placed on a host with room for 2", placed)
	}
}
