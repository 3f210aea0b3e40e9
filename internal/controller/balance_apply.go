package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// applyMoves starts one live migration per planned move (automatic
// mode), through the gate: it re-checks the move with every placement
// rule and stores the migration with its target's capacity held
// (state.CreateHeldMigration) under the leadership fence; the migration
// controller and the agents carry it out. A VM that moved, is being
// deleted or is already migrating is skipped, a move the gate refuses is
// counted (the next round plans again).
func (r *reconciler) applyMoves(ctx context.Context, plan *model.BalancePlan) error {
	var errs []error
	r.c.mu.Lock()
	policy := r.c.policy // the cluster's migration downtime limit
	r.c.mu.Unlock()
	for _, mv := range plan.Moves {
		project, name, ok := state.ParseVMKey(mv.VM)
		if !ok {
			continue
		}
		vm := r.c.vmByKey(mv.VM)
		if vm == nil {
			continue
		}
		opts, err := policy.MigrationOptions(&vm.Spec, nil, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mode := model.MigrationLive
		if vm.Status.Phase != model.PhaseRunning {
			mode = model.MigrationCold
		}
		m := &model.Migration{Meta: model.Meta{Project: project}, VM: name, Source: mv.From, Target: mv.To, Mode: mode,
			Options: opts, Spec: vm.Spec,
			Explanation: &model.Explanation{Time: plan.Time, Chosen: mv.To, Summary: "balancer (" + plan.Policy + ", " + mv.Reason + "): " + mv.Detail}}
		created, err := r.gate.startMigration(ctx, m)
		switch {
		case errors.Is(err, ErrPlanRefused):
			plan.Refused++
			r.m.log.Info("the gate refused a balancer move", "vm", mv.VM, "to", mv.To, "why", refusal(err))
			continue
		case errors.Is(err, state.ErrMigrating), errors.Is(err, state.ErrMoved), errors.Is(err, state.ErrNotFound):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("controller: migrate %s to %s: %w", mv.VM, mv.To, err))
			continue
		}
		plan.Applied++
		r.m.log.Info("balancer started migration", "migration", created.Name, "vm", mv.VM, "from", mv.From, "to", mv.To, "reason", mv.Reason)
	}
	return errors.Join(errs...)
}

// vmByKey returns the cached VM "project/name", or nil.
func (c *cache) vmByKey(key string) *model.VM {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vms[key]
}
