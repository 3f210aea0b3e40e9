package controller

import (
	"context"
	"errors"
	"sort"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// PlanMigration runs the pre-checks of moving vm to host to ("" = the
// scheduler's choice among the other hosts) on the stored state and
// answers the target, the mode and the scheduler's explanation. It
// refuses with an error wrapping state.ErrRefused. The server calls it
// before it stores a migration, so that a refusal touches nothing; the
// migration controller checks capacity again when it reserves the target.
func (d *DryRunner) PlanMigration(ctx context.Context, vm *model.VM, to string) (string, model.MigrationMode, *model.Explanation, error) {
	s, err := d.snapshot(ctx)
	if err != nil {
		return "", "", nil, err
	}
	alive, err := d.repo.AliveHosts(ctx)
	if err != nil {
		return "", "", nil, err
	}
	c, err := CheckMigration(s, alive, vm, to, d.migrationPlacer())
	if err != nil {
		return "", "", nil, err
	}
	return c.Target, c.Mode, c.Explanation, nil
}

// migrationPlacer is an exhaustive scheduler placer that rebuilds its
// snapshot every call (CheckMigration hands it modified snapshots).
func (d *DryRunner) migrationPlacer() Placer {
	sp := NewSchedulerPlacer()
	sp.Exhaustive = true
	return sp
}

// PlanDrain answers where each VM on host would go now, and which cannot
// move and why. VMs already migrating are listed as movable with their
// migration's target.
func (d *DryRunner) PlanDrain(ctx context.Context, host string) (movable, blocked []api.DrainPlanItem, err error) {
	s, err := d.snapshot(ctx)
	if err != nil {
		return nil, nil, err
	}
	alive, err := d.repo.AliveHosts(ctx)
	if err != nil {
		return nil, nil, err
	}
	vms, _, err := d.repo.ListVMs(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	migs, _, err := d.repo.ListMigrations(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	active := map[string]*model.Migration{}
	for _, m := range migs {
		if !m.Phase.Final() {
			active[m.Name] = m
		}
	}
	return planDrain(s, alive, vms, active, host, d.migrationPlacer())
}

// planDrain is PlanDrain over given state; it books each planned move on
// the snapshot so that later VMs see the room earlier ones take.
func planDrain(s *Snapshot, alive map[string]bool, vms []*model.VM, active map[string]*model.Migration, host string, placer Placer) (movable, blocked []api.DrainPlanItem, err error) {
	on := make([]*model.VM, 0)
	for _, vm := range vms {
		if vm.Status.Host == host {
			on = append(on, vm)
		}
	}
	sort.Slice(on, func(i, j int) bool { return on[i].Key() < on[j].Key() })
	movable, blocked = []api.DrainPlanItem{}, []api.DrainPlanItem{}
	for _, vm := range on {
		if m := active[vm.Status.Migration]; m != nil {
			movable = append(movable, api.DrainPlanItem{VM: vm.Key(), Mode: m.Mode, Target: m.Target})
			continue
		}
		c, err := CheckMigration(s, alive, vm, "", placer)
		if errors.Is(err, state.ErrRefused) {
			blocked = append(blocked, api.DrainPlanItem{VM: vm.Key(), Reason: err.Error()})
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		movable = append(movable, api.DrainPlanItem{VM: vm.Key(), Mode: c.Mode, Target: c.Target})
		s.Allocs[c.Target] = allocAdd(s.Allocs[c.Target], c.Target, vm)
	}
	return movable, blocked, nil
}
