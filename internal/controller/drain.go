package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// EventHostDrained is written when a drain has moved every VM away.
const EventHostDrained = "host.drained"

// drains carries out every host drain: it starts migrations of the VMs
// still on a draining host, at most Drain.MaxConcurrent at a time per
// host (counting migrations from and to it), live for running VMs and
// cold for stopped ones, each to the host the scheduler picks; it keeps
// the list of VMs that cannot move, with the reason, on the host; and it
// marks the drain done once the host holds no VM.
//
// The pass reads the hosts from the store only while the controllers'
// cache shows a drain not done: the cache pokes this controller after it
// applied a host change (run), so a drain just started is seen by the
// pass that change causes.
func (x *migrator) drains(ctx context.Context, alive map[string]bool) error {
	if !x.gate.c.anyDraining() {
		return nil
	}
	hosts, _, err := x.repo.ListHosts(ctx)
	if err != nil {
		return err
	}
	var draining []*model.Host
	for _, h := range hosts {
		if h.Drain != nil && !h.Drain.Done {
			draining = append(draining, h)
		}
	}
	if len(draining) == 0 {
		return nil
	}
	snap, err := newDryRunner(x.repo, nil, x.now).snapshot(ctx)
	if err != nil {
		return err
	}
	vms, _, err := x.repo.ListVMs(ctx, "")
	if err != nil {
		return err
	}
	migs, _, err := x.repo.ListMigrations(ctx, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range draining {
		if err := x.drainHost(ctx, h, snap, alive, vms, migs); err != nil {
			errs = append(errs, fmt.Errorf("drain %s: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (x *migrator) drainHost(ctx context.Context, h *model.Host, snap *Snapshot, alive map[string]bool,
	vms []*model.VM, migs []*model.Migration) error {
	limit := h.Drain.MaxConcurrent
	if limit <= 0 {
		limit = model.DefaultDrainConcurrency
	}
	running := 0
	for _, m := range migs {
		if !m.Phase.Final() && state.MigrationInvolves(m, h.Name) {
			running++
		}
	}
	var on []*model.VM
	for _, vm := range vms {
		if vm.Status.Host == h.Name {
			on = append(on, vm)
		}
	}
	sort.Slice(on, func(i, j int) bool { return on[i].Key() < on[j].Key() })
	placer := NewSchedulerPlacer()
	placer.Exhaustive = true
	blocked := []model.DrainBlocked{}
	for _, vm := range on {
		if vm.Status.Migration != "" {
			continue
		}
		c, err := CheckMigration(snap, alive, vm, "", placer)
		if errors.Is(err, state.ErrRefused) {
			blocked = append(blocked, model.DrainBlocked{VM: vm.Key(), Reason: err.Error()})
			continue
		}
		if err != nil {
			return err
		}
		if running >= limit {
			continue
		}
		opts, err := snap.Policy.MigrationOptions(&vm.Spec, nil, nil)
		if err != nil {
			return err
		}
		mg, err := x.gate.startMigration(ctx, &model.Migration{
			Meta: model.Meta{Project: vm.Project}, VM: vm.Name, VMUID: vm.UID, Source: h.Name, Target: c.Target, Mode: c.Mode,
			Options: opts, Spec: vm.Spec, Drain: h.Name, Explanation: c.Explanation,
		})
		if errors.Is(err, ErrPlanRefused) {
			blocked = append(blocked, model.DrainBlocked{VM: vm.Key(), Reason: refusal(err)})
			continue
		}
		if errors.Is(err, state.ErrMigrating) || errors.Is(err, state.ErrMoved) {
			continue // changed meanwhile: the next pass sees it
		}
		if err != nil {
			return err
		}
		x.log.Info("drain started a migration", "host", h.Name, "vm", vm.Key(), "to", c.Target, "mode", c.Mode, "id", mg.Name)
		running++
		snap.Allocs[c.Target] = allocAdd(snap.Allocs[c.Target], c.Target, vm)
	}
	done := len(on) == 0
	if done == h.Drain.Done && sameBlocked(blocked, h.Drain.Blocked) {
		return nil
	}
	_, err := x.repo.UpdateHost(ctx, h.Name, func(c *model.Host) error {
		if c.Drain == nil {
			return state.ErrSkip
		}
		c.Drain.Blocked, c.Drain.Done = blocked, done
		return nil
	})
	if err != nil {
		return err
	}
	if done {
		x.gate.auditHost(ctx, model.AuditHostDrain, h.Name, "drained: no VM left on it")
		return x.repo.AppendEvent(ctx, model.Event{Kind: EventHostDrained, Object: state.HostObject(h.Name),
			Message: fmt.Sprintf("host %s drained: no VM left on it", h.Name)})
	}
	return nil
}

func sameBlocked(a, b []model.DrainBlocked) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
