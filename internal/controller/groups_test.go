package controller

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// fakeUsage is a load the test sets: every VM of the group uses cpu
// percent of its vCPUs.
type fakeUsage struct {
	mu  sync.Mutex
	cpu float64
}

func (f *fakeUsage) set(cpu float64) { f.mu.Lock(); f.cpu = cpu; f.mu.Unlock() }

func (f *fakeUsage) VMCPU(vm *model.VM, _ time.Time) (float64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cpu, vm.Status.Phase == model.PhaseRunning
}

// lbWorld is a cluster of three hosts serving vpool networks, network
// lan, balancer web and a group g behind it, with fake agents: assigned
// VMs start at once, deleted ones go, and each balancer's host reports
// its members up and idle.
type lbWorld struct {
	*env
	usage *fakeUsage
	audit *recorder
	stop  func()
	mu    sync.Mutex
	// failed VMs are reported failed by their fake agent.
	failed map[string]bool
}

func newLBWorld(t *testing.T, group model.GroupSpec) *lbWorld {
	t.Helper()
	e := newEnv(t)
	e.hostTTL = 1 << 30 // the test steps the clock past cooldowns: hosts stay alive
	ctx := context.Background()
	for _, h := range []string{"h1", "h2", "h3"} {
		e.addHost(h, 16, 64*model.GiB, nil)
		if _, err := e.repo.UpdateHost(ctx, h, func(x *model.Host) error {
			x.Net = &model.HostNet{Overlay: "192.0.2." + h[1:], UnderlayMTU: 1500, Balancers: true}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	spec := model.NetworkSpec{Subnet: "10.1.0.0/24"}
	if err := spec.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.repo.CreateNetwork(ctx, &model.Network{Meta: model.Meta{Name: "lan", Project: "p"}, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	ls := model.LBSpec{Network: "lan", Listen: 80, DrainTimeout: 600}
	if err := ls.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.repo.CreateLB(ctx, &model.LoadBalancer{Meta: model.Meta{Name: "web", Project: "p"}, Spec: ls}, "0a:00:00:00:00:99"); err != nil {
		t.Fatal(err)
	}
	group.Template = model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB, NICs: []model.NIC{{Network: "lan"}}}
	group.LB = "web"
	if err := group.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.repo.CreateGroup(ctx, &model.ScalingGroup{Meta: model.Meta{Name: "g", Project: "p"}, Spec: group}); err != nil {
		t.Fatal(err)
	}
	w := &lbWorld{env: e, usage: &fakeUsage{}, audit: &recorder{}, failed: map[string]bool{}}
	cfg := e.config("s1", nil)
	cfg.Placer = NewSchedulerPlacer()
	cfg.VMUsage = w.usage
	cfg.Audit = w.audit
	_, w.stop = e.start(cfg)
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.agents(actx) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

// agents plays the hosts' agents until ctx ends.
func (w *lbWorld) agents(ctx context.Context) {
	for ctx.Err() == nil {
		vms, _, _ := w.repo.ListVMs(ctx, "p")
		for _, vm := range vms {
			switch {
			case vm.DeletedAt != nil:
				_ = w.repo.FinishDeleteVM(ctx, "p", vm.Name)
			case vm.Status.Host != "" && vm.Status.Phase != model.PhaseRunning && vm.Status.Phase != model.PhaseFailed:
				_, _ = w.repo.UpdateVM(ctx, "p", vm.Name, func(v *model.VM) error { v.Status.Phase = model.PhaseRunning; return nil })
			}
			w.mu.Lock()
			bad := w.failed[vm.Name]
			w.mu.Unlock()
			if bad && vm.Status.Phase == model.PhaseRunning {
				_, _ = w.repo.UpdateVM(ctx, "p", vm.Name, func(v *model.VM) error { v.Status.Phase = model.PhaseFailed; return nil })
			}
		}
		_, _ = w.repo.UpdateLB(ctx, "p", "web", func(b *model.LoadBalancer) ([]model.Event, error) {
			if b.Status.Host == "" {
				return nil, state.ErrSkip
			}
			obs := &model.LBObserved{At: w.clock.Now().Add(time.Millisecond), Host: b.Status.Host, Running: true, Members: map[string]model.LBMemberHealth{}}
			for _, m := range b.Status.Members {
				obs.Members[m.VM] = model.LBMemberHealth{Health: "up", Draining: m.State == model.MemberDraining}
			}
			b.Status.Observed = obs
			return nil, nil
		})
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *lbWorld) group() *model.ScalingGroup {
	g, err := w.repo.GetGroup(context.Background(), "p", "g")
	if err != nil {
		w.t.Fatal(err)
	}
	return g
}

func (w *lbWorld) lb() *model.LoadBalancer {
	b, err := w.repo.GetLB(context.Background(), "p", "web")
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

// serving reports whether the group has n members in service and the
// balancer serves exactly those, all active.
func (w *lbWorld) serving(n int) bool {
	g, b := w.group(), w.lb()
	in := map[string]bool{}
	for _, m := range g.Status.Members {
		if m.State == model.GroupMemberInService {
			in[m.VM] = true
		}
	}
	if len(in) != n || len(g.Status.Members) != n || len(b.Status.Members) != n {
		return false
	}
	for _, m := range b.Status.Members {
		if !in[m.VM] || m.State != model.MemberActive {
			return false
		}
	}
	return true
}

// TestScalingGroupLifecycle runs a group behind a balancer through the
// controllers: it reaches its minimum spread over the hosts, the
// balancer is placed and serves the members, a load step scales it out
// at once, a failed member is replaced, low load scales it in one member
// per cooldown — each removed member drained from the balancer before
// its VM is deleted — and every decision is an event with its reason.
func TestScalingGroupLifecycle(t *testing.T) {
	w := newLBWorld(t, model.GroupSpec{Min: 2, Max: 6, TargetCPU: 50})
	eventually(t, "two members in service behind the balancer", func() bool { return w.serving(2) })
	b := w.lb()
	if b.Status.Host == "" || b.Status.Phase != model.LBActive || !strings.Contains(b.Status.Placement, "other balancer(s)") {
		t.Fatalf("balancer not placed with its reasons: %+v", b.Status)
	}
	hosts := map[string]bool{}
	for _, vm := range w.vms() {
		hosts[vm.Status.Host] = true
		if vm.Spec.Labels[model.GroupLabel] != "g" || vm.Spec.Placement.Affinity != model.AntiAffinitySoft || len(vm.Spec.NICs) != 1 || vm.Spec.NICs[0].IP == "" {
			t.Fatalf("member spec: %+v", vm.Spec)
		}
	}
	if len(hosts) != 2 {
		t.Fatalf("soft anti-affinity: members on %v", hosts)
	}
	// A load step: 100% of each member against a target of 50%.
	w.usage.set(100)
	eventually(t, "scale out to four", func() bool { return w.serving(4) })
	if evs := w.events("group.scale-out"); len(evs) != 1 || !strings.Contains(evs[0].Message, "over the target 50%: 2 → 4") {
		t.Fatalf("scale-out events: %+v", evs)
	}
	if recs := w.audit.actions(model.AuditGroupPrefix + "scale-out"); len(recs) != 1 || recs[0].Object != "group/p/g" ||
		recs[0].Project != "p" || !strings.Contains(recs[0].Reason, "over the target 50%: 2 → 4") {
		t.Fatalf("scale-out decisions recorded: %+v", recs)
	}
	if recs := w.audit.actions(model.AuditLBPlaced); len(recs) != 1 || recs[0].Object != "lb/p/web" || recs[0].Host != b.Status.Host ||
		recs[0].Reason != b.Status.Placement {
		t.Fatalf("the balancer's placement recorded: %+v (status %+v)", recs, b.Status)
	}
	// A failed member is replaced.
	w.usage.set(50)
	victim := w.group().Status.Members[0].VM
	w.mu.Lock()
	w.failed[victim] = true
	w.mu.Unlock()
	eventually(t, "the failed member replaced", func() bool {
		_, err := w.repo.GetVM(context.Background(), "p", victim)
		return w.serving(4) && !lbServes(w.lb(), victim) && err != nil
	})
	if evs := w.events("group.member-draining"); len(evs) == 0 || !strings.Contains(evs[len(evs)-1].Message, "replacing failed member(s) ["+victim+"]") {
		t.Fatalf("replacement events: %+v", evs)
	}
	// Low load: one member out per scale-in cooldown, drained first.
	w.usage.set(5)
	w.clock.Step(301 * time.Second)
	eventually(t, "scale in to three", func() bool {
		ok := w.serving(3)
		if !ok {
			t.Logf("group %+v\nlb %+v", w.group().Status, w.lb().Status.Members)
		}
		return ok
	})
	for _, kind := range []string{"group.scale-in", "lb.member-draining", "lb.member-removed", "group.member-deleted"} {
		if len(w.events(kind)) == 0 {
			t.Errorf("no %s event", kind)
		}
	}
	if recs := w.audit.actions(model.AuditGroupPrefix + "scale-in"); len(recs) != 1 || recs[0].Object != "group/p/g" {
		t.Errorf("scale-in decisions recorded: %+v", recs)
	}
	time.Sleep(200 * time.Millisecond) // many passes: no second scale-in within the cooldown
	if g := w.group(); g.Status.Desired != 3 {
		t.Fatalf("scaled in again within the cooldown: %+v", g.Status)
	}
	w.clock.Step(301 * time.Second)
	eventually(t, "scale in to two", func() bool { return w.serving(2) })
	w.clock.Step(301 * time.Second)
	time.Sleep(200 * time.Millisecond)
	if g := w.group(); g.Status.Desired != 2 {
		t.Fatalf("went below the minimum: %+v", g.Status)
	}
}

func lbServes(b *model.LoadBalancer, vm string) bool {
	for _, m := range b.Status.Members {
		if m.VM == vm {
			return true
		}
	}
	return false
}

// balancersOn maps each host to its Balancers count.
func (w *lbWorld) balancersOn() map[string]int {
	hs, _, err := w.repo.ListHosts(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]int{}
	for _, h := range hs {
		out[h.Name] = h.Balancers
	}
	return out
}

// TestBalancerMovesWhenItsHostGoes: a balancer whose host stops being
// alive is placed on another host, with an event saying why; the host
// that serves it has it counted (Host.Balancers, which placement takes
// the balancer's reserve for), the one it left no longer.
func TestBalancerMovesWhenItsHostGoes(t *testing.T) {
	w := newLBWorld(t, model.GroupSpec{Min: 1, Max: 1})
	eventually(t, "placed", func() bool { return w.lb().Status.Host != "" })
	from := w.lb().Status.Host
	eventually(t, "counted on its host", func() bool {
		return reflect.DeepEqual(w.balancersOn(), map[string]int{"h1": 0, "h2": 0, "h3": 0, from: 1})
	})
	if _, err := w.repo.UpdateHost(context.Background(), from, func(h *model.Host) error { h.Cordoned = true; return nil }); err != nil {
		t.Fatal(err)
	}
	eventually(t, "moved", func() bool { h := w.lb().Status.Host; return h != "" && h != from })
	evs := w.events("lb.moved")
	if len(evs) != 1 || evs[0].From != from || !strings.Contains(evs[0].Message, "moved from "+from+" (unusable)") {
		t.Fatalf("move events: %+v", evs)
	}
	if recs := w.audit.actions(model.AuditLBMoved); len(recs) != 1 || recs[0].From != from || recs[0].Host != w.lb().Status.Host ||
		!strings.Contains(recs[0].Reason, "moved from "+from+" (unusable)") {
		t.Fatalf("the move recorded: %+v", recs)
	}
	to := w.lb().Status.Host
	eventually(t, "counted on its new host only", func() bool {
		return reflect.DeepEqual(w.balancersOn(), map[string]int{"h1": 0, "h2": 0, "h3": 0, to: 1})
	})
	// Gone, it is counted nowhere.
	if err := w.repo.FinishDeleteLB(context.Background(), "p", "web", "test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "counted nowhere", func() bool {
		return reflect.DeepEqual(w.balancersOn(), map[string]int{"h1": 0, "h2": 0, "h3": 0})
	})
}
