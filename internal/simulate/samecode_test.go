package simulate

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/trace"
)

// serverPlaces places c's VMs one by one with the server's placer — the
// controller.SchedulerPlacer the server wires in — committing each
// decision the way the scheduling controller does: the chosen host's
// allocation grows by the VM (scheduler.ApplyVM, the accounting the
// state layer stores) and the host is recorded in Snapshot.Changed.
func serverPlaces(t *testing.T, c *Cluster) []string {
	t.Helper()
	placer := controller.NewSchedulerPlacer()
	snap := &controller.Snapshot{
		Hosts:  append([]model.Host(nil), c.Hosts...),
		Allocs: map[string]model.Allocation{},
		Policy: c.Policy,
		Now:    time.Date(2011, 3, 3, 0, 0, 0, 0, time.UTC),
		Epoch:  1,
	}
	out := make([]string, len(c.VMs))
	for i := range c.VMs {
		vm := c.VMs[i]
		host, expl := placer.Place(snap, &vm)
		if host == "" {
			t.Fatalf("server: %s fits nowhere: %s", vm.Key(), expl.Summary)
		}
		out[i] = host
		a := snap.Allocs[host]
		a.VMs, a.Domains, a.Groups = maps.Clone(a.VMs), maps.Clone(a.Domains), maps.Clone(a.Groups)
		a.Host = host
		scheduler.ApplyVM(&a, vm.Key(), &vm.Spec, +1)
		snap.Allocs[host] = a
		snap.Changed = append(snap.Changed, host)
	}
	return out
}

// simPlaces runs the simulator's initial placement under the vpool
// policy and names each VM's host.
func simPlaces(t *testing.T, tr *trace.Trace, hosts int) []string {
	t.Helper()
	e := newEngine(tr, Config{Setup: Literature, Policy: "vpool", Hosts: hosts}, balance.NewVPool(balance.DefaultVPoolConfig()))
	if err := e.place(); err != nil {
		t.Fatal(err)
	}
	if e.res.Placement != PlacementScheduler {
		t.Fatalf("placement %q, want %q", e.res.Placement, PlacementScheduler)
	}
	out := make([]string, len(e.vms))
	for v := range e.vms {
		out[v] = e.view.c.Hosts[e.vms[v].host].Name
	}
	return out
}

// TestSimulatorPlacesAsTheServer is the promise "the same code in the
// simulator and the server": for the same hosts, policy and VMs, every
// placement decision of the simulator equals what the server's placer
// returns. The traces fill several hosts of both types, so each decision
// depends on the ones before it (binpack, the energy score, the core
// labels, memory).
func TestSimulatorPlacesAsTheServer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tr    func(testing.TB) *trace.Trace
		hosts int
	}{
		{"synthetic 90 VMs on 60 hosts", func(testing.TB) *trace.Trace { return rampTrace(90, 4) }, 60},
		{"PlanetLab 20110303 on 800 hosts", func(tb testing.TB) *trace.Trace { return loadDay(tb, "20110303") }, DefaultHosts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.tr(t)
			sim := simPlaces(t, tr, tc.hosts)
			server := serverPlaces(t, NewCluster(tr, tc.hosts))
			used := map[string]bool{}
			for i := range sim {
				if sim[i] != server[i] {
					t.Fatalf("VM %d: the simulator placed it on %s, the server on %s", i, sim[i], server[i])
				}
				used[sim[i]] = true
			}
			if len(used) < 2 {
				t.Fatalf("all VMs on %d host(s): the case decides nothing", len(used))
			}
			t.Logf("%d VMs, %d decisions equal, %d hosts used", len(sim), len(sim), len(used))
		})
	}
}

// storeRecords is what the store would hold, derived from where the
// simulator has its VMs (not from the view's bookkeeping): each VM's
// record names its host (none once the literature setup dropped it), and
// each host's allocation holds the VMs on it and those copying to it.
func storeRecords(e *engine) (map[string]model.Allocation, []*model.VM) {
	c := e.view.c
	vms := make([]*model.VM, len(c.VMs))
	for i := range c.VMs {
		vm := c.VMs[i]
		vm.Status.Host = ""
		if e.vms[i].alive && e.vms[i].host >= 0 {
			vm.Status.Host = c.Hosts[e.vms[i].host].Name
		}
		vms[i] = &vm
	}
	allocs := make(map[string]model.Allocation, len(c.Hosts))
	for h := range c.Hosts {
		a := model.Allocation{Host: c.Hosts[h].Name, VMs: map[string]bool{}}
		for _, v := range e.hosts[h].vms {
			if e.vms[v].alive {
				scheduler.ApplyVM(&a, vms[v].Key(), &vms[v].Spec, +1)
			}
		}
		allocs[a.Host] = a
	}
	return allocs, vms
}

// twin plans every round twice: with the simulator's hook (the plan the
// simulator executes) and with the hook the server's balancer builds
// from the store's records (scheduler.ClusterView over the hosts, the
// allocation records and the policy, then scheduler.BalanceCheck), and
// compares the plans and the hooks' answers. It also plans without any
// hook and counts the moves the server's rules refuse in that plan: the
// rounds in which the hook decides something.
type twin struct {
	t      *testing.T
	inner  balance.Planner
	e      *engine
	pairs  func(round, vm, host int) bool // which (VM, host) answers to compare
	rounds int
	moves  int
	asked  int
	bites  int // moves of hookless plans the server refuses
}

func (w *twin) Name() string { return w.inner.Name() }

func (w *twin) Plan(s *balance.Snapshot) balance.Plan {
	t, v := w.t, w.e.view
	w.rounds++
	if s.Feasible == nil {
		t.Fatal("the simulator planned without the feasibility hook")
	}
	plan := w.inner.Plan(s)
	allocs, records := storeRecords(w.e)
	server := func() *scheduler.MoveCheck {
		sched, rules, err := scheduler.ClusterView(v.c.Policy, v.c.Hosts, allocs)
		if err != nil {
			t.Fatal(err)
		}
		return sched.BalanceCheck(rules, v.c.Hosts, records)
	}
	srv := *s
	srv.Feasible = server()
	if got := w.inner.Plan(&srv); !reflect.DeepEqual(got, plan) {
		t.Fatalf("round %d: the simulator plans %d moves (%s), the server %d (%s)", w.rounds, len(plan.Moves), plan.Note, len(got.Moves), got.Note)
	}
	sim, fresh := v.hook(), server()
	for vm := range s.VMs {
		for h := range s.Hosts {
			if !w.pairs(w.rounds, vm, h) {
				continue
			}
			w.asked++
			if a, b := sim.Feasible(vm, h), fresh.Feasible(vm, h); a != b {
				t.Fatalf("round %d: VM %d → host %d: the simulator's hook says %v, the server's %v (%s)", w.rounds, vm, h, a, b, fresh.Why(vm, h))
			}
		}
	}
	free := *s
	free.Feasible = nil
	check := server()
	for _, m := range w.inner.Plan(&free).Moves {
		if !check.Feasible(m.VM, m.To) {
			w.bites++
			continue
		}
		check.Hold(m.VM, m.To)
	}
	w.moves += len(plan.Moves)
	return plan
}

// TestSimulatorBalancesAsTheServer is "the same code" for the balancer:
// every round, the plan the simulator executes equals the plan the same
// planner makes with the hook the server's balancer builds from the same
// records, and the two hooks answer alike. The simulator keeps its
// scheduler view incrementally through placements, migrations (a copy
// holds its target) and VMs the literature setup drops; the server builds
// its view afresh each round from the records, which the test derives
// from where the simulator has its VMs. In every case the hook refuses
// moves the planner would make without it (counted, or the case decides
// nothing): racks, anti-affinity, a pin and an isolation domain
// (rulesCluster) on the synthetic trace; on PlanetLab the core labels
// (a lightly used c1.medium would fit a G4's capacity, not its cores).
func TestSimulatorBalancesAsTheServer(t *testing.T) {
	all := func(int, int, int) bool { return true }
	for _, tc := range []struct {
		name   string
		tr     func(testing.TB) *trace.Trace
		hosts  int
		policy string
		rules  bool
		pairs  func(round, vm, host int) bool
	}{
		{"vpool, synthetic 90 VMs on 60 hosts with rules", func(testing.TB) *trace.Trace { return rampTrace(90, 24) }, 60, "vpool", true, all},
		{"drs, synthetic 90 VMs on 60 hosts with rules", func(testing.TB) *trace.Trace { return rampTrace(90, 24) }, 60, "drs", true, all},
		{"vpool, PlanetLab 20110303 on 800 hosts, 48 rounds", func(tb testing.TB) *trace.Trace { return firstSamples(loadDay(tb, "20110303"), 49) },
			DefaultHosts, "vpool", false, func(round, vm, host int) bool { return (vm*31+host*7+round)%97 == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := tc.tr(t)
			inner, err := balance.NewPlanner(tc.policy, 1)
			if err != nil {
				t.Fatal(err)
			}
			w := &twin{t: t, inner: inner, pairs: tc.pairs}
			cfg := Config{Setup: Literature, Policy: tc.policy, Hosts: tc.hosts}
			if tc.rules {
				cfg.Cluster = rulesCluster(tr, tc.hosts)
			}
			w.e = newEngine(tr, cfg, w)
			if err := w.e.place(); err != nil {
				t.Fatal(err)
			}
			if err := w.e.run(context.Background()); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d rounds, %d moves equal, %d hook answers equal; without the hook the planner would have made %d moves the server refuses",
				w.rounds, w.moves, w.asked, w.bites)
			if w.moves == 0 || w.bites == 0 {
				t.Fatalf("%d moves, %d refused without the hook: the case decides nothing", w.moves, w.bites)
			}
		})
	}
}

// firstSamples keeps the first n samples of every VM of tr.
func firstSamples(tr *trace.Trace, n int) *trace.Trace {
	out := &trace.Trace{Interval: tr.Interval, VMs: make([]trace.VM, len(tr.VMs))}
	for i, v := range tr.VMs {
		out.VMs[i] = trace.VM{Name: v.Name, CPU: v.CPU[:min(n, len(v.CPU))]}
	}
	return out
}

// rulesCluster is NewCluster with placement rules the planners do not
// model: half of the hosts are in rack r1, the others in r2, and every
// third VM requires r1; VMs 1, 4, 7, … 58 form hard anti-affinity
// groups of four; VM 50 is pinned to host-02; VMs 80-85 share an
// isolation domain.
func rulesCluster(tr *trace.Trace, hosts int) *Cluster {
	c := NewCluster(tr, hosts)
	for i := range c.Hosts {
		c.Hosts[i].Labels["rack"] = []string{"r1", "r1", "r2", "r2"}[i%4]
	}
	for i := range c.VMs {
		p := &c.VMs[i].Spec.Placement
		switch {
		case i%3 == 0:
			if p.RequiredLabels == nil {
				p.RequiredLabels = map[string]string{}
			}
			p.RequiredLabels["rack"] = "r1"
		case i%3 == 1:
			p.AffinityGroup, p.Affinity = fmt.Sprintf("a%d", i/12), model.AntiAffinityHard
		case i == 50:
			p.Host = c.Hosts[2].Name
		case i >= 80 && i <= 85:
			p.IsolationDomain = "pci"
		}
	}
	return c
}

// gateCheck re-checks every move of every plan the simulator executes the
// way the server's gate does before it commits a migration: in plan
// order, scheduler.CheckMove on the allocations as they are, each move
// then holding its target. With hook false the planner gets the snapshot
// without the feasibility hook (the control case).
type gateCheck struct {
	inner   balance.Planner
	e       *engine
	hook    bool
	moves   int
	refused map[string]int // by filter
}

func (g *gateCheck) Name() string { return g.inner.Name() }

func (g *gateCheck) Plan(s *balance.Snapshot) balance.Plan {
	if !g.hook {
		free := *s
		free.Feasible = nil
		s = &free
	}
	plan := g.inner.Plan(s)
	v := g.e.view
	snap := v.snap.Clone()
	held := map[int]model.Allocation{}
	for _, m := range plan.Moves {
		vm := &v.c.VMs[m.VM]
		from, to := v.c.Hosts[g.e.vms[m.VM].host].Name, v.c.Hosts[m.To].Name
		if why := v.sched.CheckMove(snap, scheduler.Request{Key: vm.Key(), Spec: &vm.Spec}, from, to); why != "" {
			filter, _, _ := strings.Cut(why, ":")
			g.refused[filter]++
		}
		a, ok := held[m.To]
		if !ok {
			a = v.allocs[m.To]
			a.VMs, a.Domains, a.Groups = maps.Clone(a.VMs), maps.Clone(a.Domains), maps.Clone(a.Groups)
		}
		scheduler.ApplyVM(&a, vm.Key(), &vm.Spec, +1) // the migration holds its target
		held[m.To] = a
		if err := snap.SetAllocation(a); err != nil {
			panic(err)
		}
		g.moves++
	}
	return plan
}

// TestSimulatorMovesKeepThePlacementRules: with labels, hard
// anti-affinity, a pinned VM and an isolation domain in the simulated
// cluster, every migration the simulator starts passes the server's
// gate check (scheduler.CheckMove) — while the same planners without the
// feasibility hook start migrations the gate refuses (for the labels and
// the anti-affinity rules at least).
func TestSimulatorMovesKeepThePlacementRules(t *testing.T) {
	tr := rampTrace(90, 24)
	broken := map[string]int{} // by filter, without the hook
	for _, policy := range []string{"vpool", "drs"} {
		t.Run(policy, func(t *testing.T) {
			run := func(hook bool) *gateCheck {
				inner, err := balance.NewPlanner(policy, 1)
				if err != nil {
					t.Fatal(err)
				}
				g := &gateCheck{inner: inner, hook: hook, refused: map[string]int{}}
				g.e = newEngine(tr, Config{Setup: Literature, Policy: policy, Hosts: 60, Cluster: rulesCluster(tr, 60)}, g)
				if err := g.e.place(); err != nil {
					t.Fatal(err)
				}
				if err := g.e.run(context.Background()); err != nil {
					t.Fatal(err)
				}
				if g.e.migs != g.moves {
					t.Fatalf("%d migrations started, %d checked", g.e.migs, g.moves)
				}
				return g
			}
			with, without := run(true), run(false)
			t.Logf("with the hook: %d migrations, refused %v; without: %d migrations, refused %v", with.moves, with.refused, without.moves, without.refused)
			if with.moves == 0 || len(with.refused) > 0 {
				t.Errorf("with the hook: %d migrations, the gate refuses %v", with.moves, with.refused)
			}
			if len(without.refused) == 0 {
				t.Errorf("without the hook the gate refuses nothing: the case does not exercise the rules")
			}
			for f, n := range without.refused {
				broken[f] += n
			}
		})
	}
	if broken["labels"] == 0 || broken["affinity"] == 0 {
		t.Errorf("without the hook the gate refuses %v: the case does not exercise labels and anti-affinity", broken)
	}
}
