package controller

import (
	"context"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// putVM creates a VM and stores it running on host (its allocation
// follows) at cpuPct, without going through any placement: the state a
// balancer finds. mut shapes the spec.
func (g *greenEnv) putVM(name, host string, vcpus int, cpuPct float64, mut func(*model.VMSpec)) {
	g.t.Helper()
	vm := &model.VM{Meta: model.Meta{Name: name, Project: "p"}, Spec: model.VMSpec{VCPUs: vcpus, Memory: model.GiB, Power: model.PowerRunning}}
	if mut != nil {
		mut(&vm.Spec)
	}
	ctx := context.Background()
	if _, err := g.repo.CreateVM(ctx, vm); err != nil {
		g.t.Fatal(err)
	}
	if _, err := g.repo.UpdateVM(ctx, "p", name, func(v *model.VM) error {
		v.Status.Host, v.Status.Phase, v.Status.Usage.CPUPercent = host, model.PhaseRunning, cpuPct
		return nil
	}); err != nil {
		g.t.Fatal(err)
	}
}

// TestBalancerHonoursPlacementRules: h1 is overloaded by a1 and a2; h2 is
// the fullest host that could take one (the balancer's first choice) but
// the placement rules forbid it; h3 is allowed where the rules allow
// anything. The plan (and, in automatic mode, the migrations) must keep
// every rule: before issue 11 the moves were checked for capacity only.
func TestBalancerHonoursPlacementRules(t *testing.T) {
	eu, us := map[string]string{"region": "eu"}, map[string]string{"region": "us"}
	for _, tc := range []struct {
		name           string
		h1, h2, h3     map[string]string
		a              func(i int) func(*model.VMSpec) // the spec of a1, a2
		b, c           func(*model.VMSpec)             // the light VMs on h2, h3
		relievedOnToH3 bool
	}{
		{name: "required labels", h1: eu, h2: us, h3: eu,
			a:              func(int) func(*model.VMSpec) { return func(s *model.VMSpec) { s.Placement.RequiredLabels = eu } },
			relievedOnToH3: true},
		{name: "pinned", a: func(int) func(*model.VMSpec) { return func(s *model.VMSpec) { s.Placement.Host = "h1" } }},
		{name: "anti-affinity",
			a: func(i int) func(*model.VMSpec) {
				return func(s *model.VMSpec) {
					s.Placement.AffinityGroup, s.Placement.Affinity = []string{"g1", "g2"}[i], model.AntiAffinityHard
				}
			},
			b:              func(s *model.VMSpec) { s.Placement.AffinityGroup, s.Placement.Affinity = "g1", model.AntiAffinityHard },
			c:              func(s *model.VMSpec) { s.Placement.AffinityGroup, s.Placement.Affinity = "g3", model.AntiAffinityHard },
			relievedOnToH3: true},
		{name: "isolation domain",
			a:              func(int) func(*model.VMSpec) { return func(s *model.VMSpec) { s.Placement.IsolationDomain = "pci" } },
			c:              func(s *model.VMSpec) { s.Placement.IsolationDomain = "pci" },
			relievedOnToH3: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := recommend()
			s.Mode = model.BalanceAutomatic
			g := newGreenEnv(t, s)
			g.addHost("h1", 2, 16*model.GiB, tc.h1)
			g.addHost("h2", 2, 16*model.GiB, tc.h2)
			g.addHost("h3", 2, 16*model.GiB, tc.h3)
			g.putVM("a1", "h1", 2, 150, tc.a(0))
			g.putVM("a2", "h1", 2, 150, tc.a(1))
			g.putVM("b1", "h2", 1, 30, tc.b) // h2 is fuller than h3: the balancer's first choice
			if tc.name == "anti-affinity" {
				g.putVM("b2", "h2", 1, 1, func(s *model.VMSpec) {
					s.Placement.AffinityGroup, s.Placement.Affinity = "g2", model.AntiAffinityHard
				})
			}
			g.putVM("c1", "h3", 1, 10, tc.c)
			g.syncHostUsage()
			g.must(g.r.balanceRound)
			p := g.plan()
			relieved := false
			for _, m := range p.Moves {
				t.Logf("%s %s %s→%s", m.Reason, m.VM, m.From, m.To)
				if (m.VM == "p/a1" || m.VM == "p/a2") && m.To != "h3" {
					t.Errorf("move %s → %s breaks the VM's placement rules", m.VM, m.To)
				}
				if m.From == "h1" && m.To == "h3" {
					relieved = true
				}
			}
			if relieved != tc.relievedOnToH3 {
				t.Errorf("h1 relieved onto h3: %v, want %v (note %q)", relieved, tc.relievedOnToH3, p.Note)
			}
			kvs, _, err := g.st.List(context.Background(), store.MigrationsPrefix)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range kvs {
				if strings.Contains(string(kv.Value), `"target":"h2"`) && (strings.Contains(string(kv.Value), `"vm":"a1"`) || strings.Contains(string(kv.Value), `"vm":"a2"`)) {
					t.Errorf("a migration breaking the rules was started: %s", kv.Value)
				}
			}
		})
	}
}

// TestFaultyPlacerCannotBreakRules: whatever a Placer answers, the commit
// re-checks it with every scheduler filter, not only capacity.
func TestFaultyPlacerCannotBreakRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(g *greenEnv)
		spec  func(*model.VMSpec)
	}{
		{"required labels", func(g *greenEnv) {}, func(s *model.VMSpec) { s.Placement.RequiredLabels = map[string]string{"region": "eu"} }},
		{"pinned elsewhere", func(g *greenEnv) {}, func(s *model.VMSpec) { s.Placement.Host = "h2" }},
		{"anti-affinity", func(g *greenEnv) {
			g.putVM("other", "h1", 1, 0, func(s *model.VMSpec) { s.Placement.AffinityGroup, s.Placement.Affinity = "g", model.AntiAffinityHard })
		}, func(s *model.VMSpec) { s.Placement.AffinityGroup, s.Placement.Affinity = "g", model.AntiAffinityHard }},
		{"isolation domain", func(g *greenEnv) {
			g.putVM("other", "h1", 1, 0, nil)
		}, func(s *model.VMSpec) { s.Placement.IsolationDomain = "pci" }},
		{"host not ready", func(g *greenEnv) {
			if _, err := g.repo.UpdateHost(context.Background(), "h1", func(h *model.Host) error { h.Cordoned = true; return nil }); err != nil {
				g.t.Fatal(err)
			}
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGreenEnv(t, recommend())
			g.addHost("h1", 8, 16*model.GiB, map[string]string{"region": "us"})
			g.addHost("h2", 8, 16*model.GiB, map[string]string{"region": "eu"})
			tc.setup(g)
			vm := &model.VM{Meta: model.Meta{Name: "x", Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB, Power: model.PowerRunning}}
			if tc.spec != nil {
				tc.spec(&vm.Spec)
			}
			if _, err := g.repo.CreateVM(context.Background(), vm); err != nil {
				t.Fatal(err)
			}
			g.r.m.cfg.Placer = PlacerFunc(func(s *Snapshot, vm *model.VM) (string, *model.Explanation) {
				return "h1", &model.Explanation{Chosen: "h1", Summary: "always h1"}
			})
			err := g.step(g.r.schedule)
			if got := g.vm("x").Status.Host; got != "" {
				t.Fatalf("VM committed on %s against its rules (err %v)", got, err)
			}
			t.Logf("refused: %v", err)
			g.checkAllocations()
		})
	}
}

// TestMigrationHoldRechecksRules: a migration stored while its target was
// fine, whose target no longer suits the VM when the controller takes the
// capacity hold, fails instead of moving the VM there.
func TestMigrationHoldRechecksRules(t *testing.T) {
	g := newGreenEnv(t, recommend())
	g.addHost("h1", 8, 16*model.GiB, map[string]string{"region": "eu"})
	g.addHost("h2", 8, 16*model.GiB, map[string]string{"region": "eu"})
	g.putVM("a", "h1", 1, 10, func(s *model.VMSpec) { s.Placement.RequiredLabels = map[string]string{"region": "eu"} })
	vm := g.vm("a")
	ctx := context.Background()
	mg, err := g.repo.CreateMigration(ctx, &model.Migration{Meta: model.Meta{Project: "p"}, VM: "a", Source: "h1", Target: "h2",
		Mode: model.MigrationLive, Spec: vm.Spec})
	if err != nil {
		t.Fatal(err)
	}
	// The operator relabels h2 before the controller gets to it.
	if _, err := g.repo.UpdateHost(ctx, "h2", func(h *model.Host) error { h.Labels = map[string]string{"region": "us"}; return nil }); err != nil {
		t.Fatal(err)
	}
	g.migrationPass()
	got, err := g.repo.GetMigration(ctx, mg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != model.MigrationFailed || got.HoldTarget {
		t.Fatalf("migration %s (hold %v), want failed: the target lost the VM's required label", got.Phase, got.HoldTarget)
	}
	t.Logf("reason: %s", got.Reason)
	if a, _ := g.repo.GetAllocation(ctx, "h2"); len(a.VMs) != 0 {
		t.Errorf("h2 holds %v", a.VMs)
	}
}
