package controller

import (
	"context"
	"sync"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// Data locality: a VM's locality constraint is its required labels
// (spec.placement.requiredLabels, e.g. region=eu). Every path that puts
// a VM on a host commits through the gate, which re-checks the
// scheduler's label filter; these tests show it path by path and that
// each decision's audit record carries the constraint and the chosen
// host's labels (the compliance report reads them). The balancer's path
// is TestBalancerHonoursPlacementRules ("required labels") and below; a
// user's migration is TestMigrationHoldRechecksRules and below.

// recorder is an Auditor that keeps what it is given.
type recorder struct {
	mu   sync.Mutex
	recs []model.AuditRecord
}

func (r *recorder) Record(_ context.Context, rec model.AuditRecord) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}

func (r *recorder) actions(action string) []model.AuditRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []model.AuditRecord
	for _, rec := range r.recs {
		if rec.Action == action {
			out = append(out, rec)
		}
	}
	return out
}

var eu, us = map[string]string{"region": "eu"}, map[string]string{"region": "us"}

func requireEU(s *model.VMSpec) { s.Placement.RequiredLabels = map[string]string{"region": "eu"} }

// auditedGreenEnv is a greenEnv whose gate records into rec.
func auditedGreenEnv(t *testing.T, set model.BalanceSettings) (*greenEnv, *recorder) {
	g := newGreenEnv(t, set)
	rec := &recorder{}
	g.r.gate.audit = rec
	return g, rec
}

// checkLocal fails for a decision that put a constrained VM on a host
// whose labels (as recorded) break the constraint.
func checkLocal(t *testing.T, recs []model.AuditRecord) {
	t.Helper()
	for _, r := range recs {
		for k, v := range r.Constraint {
			if r.HostLabels[k] != v {
				t.Errorf("%s of %s to %s: host label %s=%q, constraint %q", r.Action, r.Object, r.Host, k, r.HostLabels[k], v)
			}
		}
	}
}

func TestLocalityPlacement(t *testing.T) {
	g, rec := auditedGreenEnv(t, recommend())
	g.addHost("h1", 16, 64*model.GiB, us) // first fit's first choice
	g.addHost("h2", 4, 8*model.GiB, eu)
	ctx := context.Background()
	for _, vm := range []*model.VM{
		{Meta: model.Meta{Name: "eu1", Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB, Power: model.PowerRunning}},
		{Meta: model.Meta{Name: "ap1", Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB, Power: model.PowerRunning,
			Placement: model.Placement{RequiredLabels: map[string]string{"region": "ap"}}}},
	} {
		if vm.Name == "eu1" {
			requireEU(&vm.Spec)
		}
		if _, err := g.repo.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	g.must(g.r.schedule)
	if h := g.vm("eu1").Status.Host; h != "h2" {
		t.Fatalf("eu1 placed on %q, want h2 (the only region=eu host)", h)
	}
	if h := g.vm("ap1").Status.Host; h != "" {
		t.Fatalf("ap1 placed on %q: no host has region=ap", h)
	}
	placed := rec.actions(model.AuditPlace)
	if len(placed) != 1 || placed[0].Object != state.VMObject("p", "eu1") || placed[0].Host != "h2" ||
		placed[0].Constraint["region"] != "eu" || placed[0].HostLabels["region"] != "eu" || placed[0].Reason == "" {
		t.Fatalf("placement records %+v", placed)
	}
	checkLocal(t, placed)
}

func TestLocalityDrain(t *testing.T) {
	g, rec := auditedGreenEnv(t, recommend())
	g.addHost("h1", 8, 16*model.GiB, eu)
	g.addHost("h2", 32, 64*model.GiB, us) // roomiest: a drain's first choice but for the constraint
	g.addHost("h3", 8, 16*model.GiB, eu)
	g.putVM("a", "h1", 1, 10, requireEU)
	g.putVM("b", "h1", 1, 10, nil)
	ctx := context.Background()
	drain := func(name string) {
		if _, err := g.repo.UpdateHost(ctx, name, func(h *model.Host) error {
			h.State, h.Drain = model.HostMaintenance, &model.HostDrain{StartedAt: g.clock.Now(), MaxConcurrent: 4}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	drain("h1")
	g.migrationPass()
	migs, _, err := g.repo.ListMigrations(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]string{}
	for _, m := range migs {
		targets[m.VM] = m.Target
	}
	if targets["a"] != "h3" {
		t.Fatalf("the drain moves a (region=eu) to %q, want h3", targets["a"])
	}
	starts := rec.actions(model.AuditMoveStart)
	if len(starts) != 2 {
		t.Fatalf("move records %+v", starts)
	}
	checkLocal(t, starts)

	// with no other eu host, a stays and the drain says why
	g2, rec2 := auditedGreenEnv(t, recommend())
	g2.addHost("h1", 8, 16*model.GiB, eu)
	g2.addHost("h2", 32, 64*model.GiB, us)
	g2.putVM("a", "h1", 1, 10, requireEU)
	if _, err := g2.repo.UpdateHost(ctx, "h1", func(h *model.Host) error {
		h.State, h.Drain = model.HostMaintenance, &model.HostDrain{StartedAt: g2.clock.Now(), MaxConcurrent: 4}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	g2.migrationPass()
	if migs, _, _ := g2.repo.ListMigrations(ctx, ""); len(migs) != 0 {
		t.Fatalf("a drain moved a region=eu VM to a us host: %+v", migs[0])
	}
	if h := g2.host("h1"); h.Drain == nil || len(h.Drain.Blocked) != 1 || h.Drain.Blocked[0].VM != "p/a" {
		t.Fatalf("drain %+v, want a blocked", h.Drain)
	}
	if n := len(rec2.actions(model.AuditMoveStart)); n != 0 {
		t.Fatalf("%d moves recorded", n)
	}
}

func TestLocalityBalancer(t *testing.T) {
	s := recommend()
	s.Mode = model.BalanceAutomatic
	g, rec := auditedGreenEnv(t, s)
	g.addHost("h1", 2, 16*model.GiB, eu)
	g.addHost("h2", 2, 16*model.GiB, us)
	g.addHost("h3", 2, 16*model.GiB, eu)
	g.putVM("a1", "h1", 2, 150, requireEU)
	g.putVM("a2", "h1", 2, 150, requireEU)
	g.putVM("b1", "h2", 1, 30, nil)
	g.putVM("c1", "h3", 1, 10, nil)
	g.syncHostUsage()
	g.must(g.r.balanceRound)
	starts := rec.actions(model.AuditMoveStart)
	if len(starts) == 0 {
		t.Fatalf("the balancer moved nothing (plan note %q)", g.plan().Note)
	}
	for _, r := range starts {
		if (r.Object == "vm/p/a1" || r.Object == "vm/p/a2") && r.Host != "h3" {
			t.Errorf("balancer moves %s to %s", r.Object, r.Host)
		}
	}
	checkLocal(t, starts)
}

func TestLocalityUserMigration(t *testing.T) {
	g, rec := auditedGreenEnv(t, recommend())
	g.addHost("h1", 8, 16*model.GiB, eu)
	g.addHost("h2", 8, 16*model.GiB, eu)
	g.putVM("a", "h1", 1, 10, requireEU)
	vm := g.vm("a")
	ctx := context.Background()
	if _, err := g.repo.CreateMigration(ctx, &model.Migration{Meta: model.Meta{Project: "p"}, VM: "a", Source: "h1", Target: "h2",
		Mode: model.MigrationLive, Spec: vm.Spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.repo.UpdateHost(ctx, "h2", func(h *model.Host) error { h.Labels = us; return nil }); err != nil {
		t.Fatal(err)
	}
	g.migrationPass()
	if n := len(rec.actions(model.AuditMoveStart)); n != 0 {
		t.Fatalf("a move to a us host was let start")
	}
	ends := rec.actions(model.AuditMoveEnd)
	if len(ends) != 1 || ends[0].Outcome != "failed" || ends[0].Host != "h1" {
		t.Fatalf("end records %+v", ends)
	}
}
