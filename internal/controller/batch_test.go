package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// createBatch creates VMs name-1..name-n in one request (one transaction).
func (e *env) createBatch(name string, n, vcpus int, mem model.Bytes, group string, kind string) {
	e.t.Helper()
	vms := make([]*model.VM, n)
	for i := range vms {
		vms[i] = &model.VM{Meta: model.Meta{Name: fmt.Sprintf("%s-%d", name, i+1), Project: "p"}, Spec: model.VMSpec{
			VCPUs: vcpus, Memory: mem, Power: model.PowerRunning,
			Placement: model.Placement{AffinityGroup: group, Affinity: kind},
		}}
	}
	if _, err := e.repo.CreateVMs(context.Background(), "p", vms); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) setPolicy(p model.Policy) {
	e.t.Helper()
	if _, err := e.repo.PutPolicy(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
}

// TestGangPlacedAllOrNothing: the members of a hard group created by one
// batch are placed together in one transaction, or not at all (each then
// pending with an explanation naming the group), and all of them as soon
// as capacity appears.
func TestGangPlacedAllOrNothing(t *testing.T) {
	tests := []struct {
		name   string
		kind   string
		hosts  [][2]int // name index, CPUs
		vcpus  int
		add    int // CPUs of the host added later
		sameOK bool
	}{
		// 3 members, 2 hosts: anti-affinity needs 3.
		{name: "anti-affinity", kind: model.AntiAffinityHard, hosts: [][2]int{{0, 8}, {1, 8}}, vcpus: 1, add: 8},
		// 3 × 2 vCPUs at ratio 1 on 4-CPU hosts: affinity needs one host of 6.
		{name: "affinity", kind: model.AffinityHard, hosts: [][2]int{{0, 4}, {1, 4}}, vcpus: 2, add: 8, sameOK: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.setPolicy(model.Policy{Ratios: model.Ratios{CPU: 1, Memory: 1, Disk: 1}, Strategy: "binpack"})
			for _, h := range tc.hosts {
				e.addHost(fmt.Sprintf("h%d", h[0]), h[1], 32*model.GiB, nil)
			}
			e.createBatch("web", 3, tc.vcpus, model.GiB, "web", tc.kind)
			cfg := e.config("a", nil)
			cfg.Placer = NewSchedulerPlacer()
			e.start(cfg)

			eventually(t, "every member explained", func() bool {
				for _, vm := range e.vms() {
					if vm.Status.Explanation == nil {
						return false
					}
				}
				return true
			})
			for _, vm := range e.vms() {
				st := vm.Status
				if st.Host != "" || st.Phase != model.PhasePending {
					t.Fatalf("%s placed on %q (phase %s): the group must be all or nothing", vm.Name, st.Host, st.Phase)
				}
				if !strings.Contains(st.Explanation.Summary, "group p/web placed all or nothing") || !strings.HasPrefix(st.Message, "waiting for capacity") {
					t.Errorf("%s: summary %q, message %q", vm.Name, st.Explanation.Summary, st.Message)
				}
			}
			t.Logf("pending: %s", e.vm("web-1").Status.Explanation.Summary)
			e.checkAllocations()

			e.addHost("h9", tc.add, 32*model.GiB, nil)
			eventually(t, "every member placed", func() bool {
				for _, vm := range e.vms() {
					if vm.Status.Host == "" {
						return false
					}
				}
				return true
			})
			hosts := map[string]bool{}
			revs := map[int64]bool{}
			for _, vm := range e.vms() {
				hosts[vm.Status.Host] = true
				revs[vm.Revision] = true
				if ex := e.explanation(vm); ex == nil || ex.Chosen != vm.Status.Host {
					t.Errorf("%s: explanation %+v", vm.Name, ex)
				}
			}
			if tc.sameOK && len(hosts) != 1 || !tc.sameOK && len(hosts) != 3 {
				t.Errorf("members on hosts %v", hosts)
			}
			if len(revs) != 1 {
				t.Errorf("members committed at revisions %v: want one transaction", revs)
			}
			if got := len(e.events("vm.phase")); got != 3 {
				t.Errorf("%d vm.phase events, want 3", got)
			}
			e.checkAllocations()
		})
	}
}

// TestGangOverTxnCap places a 50-member anti-affinity batch on 50 hosts:
// 100 writes in the placement transaction, the 50 phase events beside it.
func TestGangOverTxnCap(t *testing.T) {
	e := newEnv(t)
	for i := range 50 {
		e.addHost(fmt.Sprintf("h%02d", i), 4, 8*model.GiB, nil)
	}
	e.createBatch("spread", 50, 1, model.GiB, "s", model.AntiAffinityHard)
	cfg := e.config("a", nil)
	cfg.Placer = NewSchedulerPlacer()
	e.start(cfg)
	eventually(t, "all placed", func() bool {
		for _, vm := range e.vms() {
			if vm.Status.Host == "" {
				return false
			}
		}
		return true
	})
	hosts := map[string]bool{}
	for _, vm := range e.vms() {
		hosts[vm.Status.Host] = true
	}
	if len(hosts) != 50 {
		t.Errorf("50 anti-affine members on %d hosts", len(hosts))
	}
	eventually(t, "50 phase events", func() bool { return len(e.events("vm.phase")) == 50 })
	e.checkAllocations()
}

// TestBatchWithoutHardGroupPlacedOneByOne: a batch without a hard group
// is placed member by member (as many as fit). Members of a hard group
// created by separate requests are too: TestSchedulerPlacerHonoursConstraints.
func TestBatchWithoutHardGroupPlacedOneByOne(t *testing.T) {
	e := newEnv(t)
	e.setPolicy(model.Policy{Ratios: model.Ratios{CPU: 1, Memory: 1, Disk: 1}, Strategy: "binpack"})
	e.addHost("h0", 4, 32*model.GiB, nil)
	e.createBatch("soft", 6, 1, model.GiB, "g", model.AntiAffinitySoft)
	cfg := e.config("a", nil)
	cfg.Placer = NewSchedulerPlacer()
	e.start(cfg)
	eventually(t, "four placed, two explained", func() bool {
		placed, explained := 0, 0
		for _, vm := range e.vms() {
			switch {
			case vm.Status.Host != "":
				placed++
			case vm.Status.Explanation != nil:
				explained++
			}
		}
		return placed == 4 && explained == 2
	})
	e.checkAllocations()
}

func TestGangsGrouping(t *testing.T) {
	vm := func(name, group string, kind string) *model.VM {
		return &model.VM{Meta: model.Meta{Name: name, Project: "p"}, Spec: model.VMSpec{Placement: model.Placement{AffinityGroup: group, Affinity: kind}}}
	}
	pending := []*model.VM{
		vm("a1", "a", model.AntiAffinityHard), vm("a2", "a", model.AntiAffinityHard), // one batch
		vm("a3", "a", model.AntiAffinityHard), // same group, another request
		vm("b1", "b", model.AffinityHard), vm("b2", "b", model.AffinityHard),
		vm("s1", "s", model.AntiAffinitySoft), vm("s2", "s", model.AntiAffinitySoft),
		vm("n1", "", ""),
	}
	created := []int64{10, 10, 11, 10, 10, 10, 10, 10}
	got := gangs(pending, created)
	want := map[string]int{"p/a1": 2, "p/a2": 2, "p/b1": 2, "p/b2": 2}
	if len(got) != len(want) {
		t.Fatalf("gangs %v", got)
	}
	for k, n := range want {
		if len(got[k]) != n {
			t.Errorf("%s: gang of %d, want %d", k, len(got[k]), n)
		}
	}
}
