package controller

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/store"
)

// defaultBandwidthMbps is the migration bandwidth assumed per host.
const defaultBandwidthMbps = 10000

// balanceView maps the planner's indices back to hosts and VMs.
type balanceView struct {
	snap  *balance.Snapshot
	hosts []model.Host
	vms   []*model.VM
	cpu   []float64 // each VM's measured CPU percent, by vms' index
	// rules is the scheduler's view of the whole cluster (every host,
	// every allocation) that the placement rules are checked on.
	rules *scheduler.Snapshot
	sched *scheduler.Scheduler
}

// moveCheck returns a fresh check of the placement rules by the planner's
// indices (scheduler.MoveCheck: it satisfies balance.Feasibility), built
// by scheduler.BalanceCheck as the simulator builds its own.
func (bv *balanceView) moveCheck() *scheduler.MoveCheck {
	return bv.sched.BalanceCheck(bv.rules, bv.hosts, bv.vms)
}

// balanceRound runs one balancing round when the interval has passed: it
// samples usage into the VM histories, plans with the configured policy,
// keeps the moves that fit the allocation limits, stores the plan with
// its reasons, and in automatic mode applies it.
func (r *reconciler) balanceRound(ctx context.Context) error {
	set, _, err := LoadBalanceSettings(ctx, r.repo.Store())
	if err != nil {
		return err
	}
	g := r.bal
	now := r.now()
	if set.Mode == model.BalanceOff || set.Mode == "" {
		return nil
	}
	if err := r.loadBalanceHistory(ctx); err != nil {
		return err
	}
	if !g.lastRound.IsZero() && now.Sub(g.lastRound) < set.Interval() {
		return nil
	}
	g.lastRound = now
	plan, err := r.planBalance(set)
	if err != nil {
		return err
	}
	if err := r.persistBalanceHistory(ctx); err != nil {
		return err
	}
	var applyErr error
	if set.Mode == model.BalanceAutomatic && len(plan.Moves) > 0 {
		if applyErr = r.applyMoves(ctx, plan); applyErr != nil {
			plan.Error = applyErr.Error()
		}
	}
	ok, _, err := r.repo.Txn(ctx, nil, []store.Op{store.Put(store.BalancePlanKey, mustJSON(plan))})
	if err != nil {
		return fmt.Errorf("controller: store balance plan: %w", err)
	}
	if ok {
		r.m.log.Info("balance plan", "policy", plan.Policy, "mode", plan.Mode, "moves", len(plan.Moves), "note", plan.Note)
	}
	return applyErr
}

// planBalance samples usage and plans one round (no I/O). The planner
// consults the scheduler's placement rules through the snapshot's
// feasibility hook, so it plans only moves the scheduler would allow.
func (r *reconciler) planBalance(set model.BalanceSettings) (*model.BalancePlan, error) {
	bv, err := r.balanceSnapshot(set)
	if err != nil {
		return nil, err
	}
	bv.snap.Feasible = bv.moveCheck()
	planner, err := balance.NewPlanner(set.Policy, 1)
	if err != nil {
		return nil, fmt.Errorf("controller: balance policy: %w", err)
	}
	out := &model.BalancePlan{Time: r.now(), Mode: set.Mode, Policy: set.Policy, Moves: []model.BalanceMove{}}
	for _, vm := range bv.vms {
		out.Samples = max(out.Samples, len(r.bal.history[vm.Key()]))
	}
	var plan balance.Plan
	if planner == nil {
		plan.Note = "policy " + set.Policy + " never migrates"
	} else {
		if set.MaxMovesPerRound > 0 || set.MaxMovesPerHost > 0 {
			planner = balance.Budget{Planner: planner, PerRound: set.MaxMovesPerRound, PerHost: set.MaxMovesPerHost}
		}
		plan = planner.Plan(bv.snap)
	}
	out.Note = plan.Note
	moves, dropped := feasibleMoves(bv, plan.Moves)
	if dropped > 0 {
		out.Note += fmt.Sprintf("; %d moves dropped (placement rules)", dropped)
	}
	out.Moves = moves
	out.Hosts = bv.hostLines(plan.Moves)
	capPlan(out)
	return out, nil
}

// Caps of a stored plan: it is one value, rewritten every round, and must
// stay far below etcd's 1.5 MiB per value on any cluster.
const (
	maxPlanMoves = 500
	maxPlanHosts = 200
)

// capPlan keeps at most maxPlanMoves moves (in plan order: the ones
// applied first) and maxPlanHosts host lines — the hosts the kept moves
// touch, then the busiest — and counts what it left out.
func capPlan(p *model.BalancePlan) {
	if len(p.Moves) > maxPlanMoves {
		p.MovesOmitted = len(p.Moves) - maxPlanMoves
		p.Moves = p.Moves[:maxPlanMoves]
		p.Note += fmt.Sprintf("; %d more moves planned, not kept", p.MovesOmitted)
	}
	if len(p.Hosts) <= maxPlanHosts {
		return
	}
	touched := map[string]bool{}
	for _, m := range p.Moves {
		touched[m.From], touched[m.To] = true, true
	}
	sort.SliceStable(p.Hosts, func(i, j int) bool {
		ti, tj := touched[p.Hosts[i].Name], touched[p.Hosts[j].Name]
		if ti != tj {
			return ti
		}
		return p.Hosts[i].CPUPercent > p.Hosts[j].CPUPercent
	})
	p.HostsOmitted = len(p.Hosts) - maxPlanHosts
	p.Hosts = p.Hosts[:maxPlanHosts]
	sort.Slice(p.Hosts, func(i, j int) bool { return p.Hosts[i].Name < p.Hosts[j].Name })
}

// balanceSnapshot builds the planner's view from the cache and appends
// this round's usage sample to every VM's history. Ready hosts take part
// fully; other hosts that still hold VMs are in the snapshot as
// maintenance (neither source nor target); empty hosts that are not
// ready (standby, down) are left out.
func (r *reconciler) balanceSnapshot(set model.BalanceSettings) (*balanceView, error) {
	g := r.bal
	snap, _ := r.c.snapshot()
	rules, sched, err := schedulerView(snap)
	if err != nil {
		return nil, err
	}
	byHost := r.c.vmsByHost()
	bv := &balanceView{snap: &balance.Snapshot{Interval: float64(set.IntervalSeconds), MemoryCounts: true}, rules: rules, sched: sched}
	seen := map[string]bool{}
	for i := range snap.Hosts {
		h := snap.Hosts[i]
		ready := h.State == model.HostReady && !h.Cordoned
		if !ready && len(byHost[h.Name]) == 0 {
			continue
		}
		lim := Limit(&h, snap.Policy)
		hi := len(bv.hosts)
		bv.hosts = append(bv.hosts, h)
		mips := float64(h.Capacity.CPUs * MIPSPerCPU)
		bh := balance.Host{Name: h.Name, MIPS: mips, PEMIPS: mips, MemMB: float64(lim.Memory) / float64(model.MiB),
			BandwidthMbps: defaultBandwidthMbps, Power: HostPowerModel(&h), Util: hostUtil(&h), Maintenance: !ready}
		for _, vm := range byHost[h.Name] {
			vi := len(bv.vms)
			cpu := r.vmUsage(vm).CPUPercent
			bv.vms, bv.cpu = append(bv.vms, vm), append(bv.cpu, cpu)
			seen[vm.Key()] = true
			vmips := float64(max(vm.Spec.VCPUs, 1) * MIPSPerCPU)
			u := min(max(cpu/100/float64(max(vm.Spec.VCPUs, 1)), 0), 1)
			hist := append([]float64{historySample(u)}, g.history[vm.Key()]...)
			if len(hist) > balance.HistoryLength {
				hist = hist[:balance.HistoryLength]
			}
			g.history[vm.Key()] = hist
			bv.snap.VMs = append(bv.snap.VMs, balance.VM{Name: vm.Key(), Host: hi, MIPS: vmips,
				MemMB: float64(vm.Spec.Memory) / float64(model.MiB), Demand: u * vmips, History: hist,
				Migrating: vm.Status.Phase != model.PhaseRunning || vm.DeletedAt != nil || vm.Status.Migration != ""})
			bh.VMs = append(bh.VMs, vi)
		}
		bv.snap.Hosts = append(bv.snap.Hosts, bh)
	}
	for k := range g.history {
		if !seen[k] {
			delete(g.history, k)
		}
	}
	return bv, nil
}

// schedulerView builds the scheduler's snapshot of a controller Snapshot
// (every host and allocation) and a scheduler for its policy, with
// scheduler.ClusterView, as the simulator builds the server's view.
func schedulerView(s *Snapshot) (*scheduler.Snapshot, *scheduler.Scheduler, error) {
	sched, snap, err := scheduler.ClusterView(s.Policy, s.Hosts, s.Allocs)
	if err != nil {
		return nil, nil, fmt.Errorf("controller: scheduler view for the balancer: %w", err)
	}
	return snap, sched, nil
}

// feasibleMoves turns planner moves into stored moves: a VM planned
// twice moves once to its last target, moves back home vanish, and the
// remaining moves are checked again, in order, with the scheduler's
// rules (each seeing the ones before it); one that breaks a rule is
// dropped.
func feasibleMoves(bv *balanceView, moves []balance.Move) ([]model.BalanceMove, int) {
	check := bv.moveCheck()
	final := map[int]balance.Move{}
	var order []int
	for _, m := range moves {
		if m.VM < 0 || m.VM >= len(bv.vms) || m.To < 0 || m.To >= len(bv.hosts) {
			continue
		}
		if _, ok := final[m.VM]; !ok {
			order = append(order, m.VM)
			final[m.VM] = m
			continue
		}
		f := final[m.VM]
		f.To = m.To
		final[m.VM] = f
	}
	out := []model.BalanceMove{}
	dropped := 0
	for _, vi := range order {
		m := final[vi]
		vm := bv.vms[vi]
		from := bv.snap.VMs[vi].Host
		if m.To == from {
			continue
		}
		to := &bv.hosts[m.To]
		if !check.Feasible(vi, m.To) {
			dropped++
			continue
		}
		check.Hold(vi, m.To)
		out = append(out, model.BalanceMove{VM: vm.Key(), From: bv.hosts[from].Name, To: to.Name, Reason: string(m.Reason),
			Detail: bv.detail(m, vi, from), CPUPercent: round1(bv.cpu[vi])})
	}
	return out, dropped
}

// detail explains one move for a person.
func (bv *balanceView) detail(m balance.Move, vi, from int) string {
	src, dst := &bv.snap.Hosts[from], &bv.snap.Hosts[m.To]
	load := func(h *balance.Host) float64 {
		var d float64
		for _, v := range h.VMs {
			d += bv.snap.VMs[v].Demand
		}
		return 100 * d / math.Max(h.MIPS, 1)
	}
	peak := 0.0
	for _, u := range bv.snap.VMs[vi].History {
		peak = math.Max(peak, u)
	}
	vm := fmt.Sprintf("%s (now %.0f%%, recent peak %.0f%% of its %d vCPUs)", bv.vms[vi].Key(),
		100*bv.snap.VMs[vi].Demand/bv.snap.VMs[vi].MIPS, 100*peak, bv.vms[vi].Spec.VCPUs)
	switch m.Reason {
	case balance.ReasonOverload:
		return fmt.Sprintf("host %s is overloaded (demand %.0f%% of its CPU, or rising past 100%%): move %s to %s (%.0f%% loaded), the fullest host that carries it",
			src.Name, load(src), vm, dst.Name, load(dst))
	case balance.ReasonUnderload:
		return fmt.Sprintf("host %s is lightly loaded (%.0f%%) and all its VMs fit on hosts that are on: move %s to %s (%.0f%% loaded) so that %s can go to standby",
			src.Name, load(src), vm, dst.Name, load(dst), src.Name)
	case balance.ReasonBalance:
		return fmt.Sprintf("reduce imbalance: move %s from %s (%.0f%%) to %s (%.0f%%)", vm, src.Name, load(src), dst.Name, load(dst))
	}
	return fmt.Sprintf("%s: move %s from %s to %s", m.Reason, vm, src.Name, dst.Name)
}

// hostLines summarises every host before and after the plan.
func (bv *balanceView) hostLines(moves []balance.Move) []model.BalanceHost {
	after := make([]float64, len(bv.hosts))
	count := make([]int, len(bv.hosts))
	where := make([]int, len(bv.vms))
	for vi, v := range bv.snap.VMs {
		where[vi] = v.Host
	}
	for _, m := range moves {
		if m.VM >= 0 && m.VM < len(where) && m.To >= 0 && m.To < len(bv.hosts) {
			where[m.VM] = m.To
		}
	}
	for vi, hi := range where {
		after[hi] += bv.snap.VMs[vi].Demand
		count[hi]++
	}
	out := make([]model.BalanceHost, 0, len(bv.hosts))
	for hi := range bv.hosts {
		h := &bv.snap.Hosts[hi]
		out = append(out, model.BalanceHost{Name: h.Name, State: bv.hosts[hi].State, CPUPercent: round1(100 * h.Util),
			PlanPercent: round1(100 * after[hi] / math.Max(h.MIPS, 1)), VMs: count[hi], PowerModel: h.Power.Name(),
			Watts: round1(h.Power.Power(h.Util))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
