package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// EventVMUnschedulable is written when a VM first fails to fit anywhere.
const EventVMUnschedulable = "vm.unschedulable"

// maxCommitAttempts bounds the re-reads of one placement that keeps
// losing its compare-and-swap; the next pass tries again.
const maxCommitAttempts = 8

// ErrPlacerBroke says the Placer answered something impossible (a host
// that is not in the snapshot, a wrong number of answers): a bug in the
// Placer, never committed. A host on which the VM does not fit is refused
// by the gate (ErrPlanRefused).
var ErrPlacerBroke = errors.New("controller: placer chose an impossible host")

// needsPlacement reports whether the scheduling controller owns vm now.
func needsPlacement(vm *model.VM) bool {
	if vm.DeletedAt != nil || vm.Status.Host != "" {
		return false
	}
	switch vm.Status.Phase {
	case "", model.PhasePending, model.PhaseScheduling:
		return true
	}
	return false
}

// schedule places every pending VM, oldest first: single VMs through the
// pipeline (decided on the loop's view, committed by the gate in groups
// while the next group is decided), the gangs of hard groups each all or
// nothing in a transaction of its own. VMs of a group that lost its
// guards are re-read and decided again, up to maxCommitAttempts rounds.
func (r *reconciler) schedule(ctx context.Context) error {
	if !r.repaired {
		return nil // repairOnce reports why
	}
	pending := r.c.pendingList()
	if len(pending) == 0 {
		clear(r.failed)
		return nil
	}
	keep := make(map[string]bool, len(pending))
	for _, vm := range pending {
		keep[vm.Key()] = true
	}
	var errs []error
	todo := pending
	for round := 0; round < maxCommitAttempts && len(todo) > 0 && ctx.Err() == nil; round++ {
		if round > 0 {
			var err error
			if todo, err = r.reread(ctx, todo); err != nil {
				errs = append(errs, err)
				break
			}
		}
		lost, err := r.scheduleRound(ctx, todo, round == 0)
		errs = append(errs, err)
		todo = lost
	}
	if len(todo) > 0 && ctx.Err() == nil {
		errs = append(errs, fmt.Errorf("controller: placing VM %s and %d more: %w", todo[0].Key(), len(todo)-1, state.ErrContention))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for k := range r.failed {
		if !keep[k] {
			delete(r.failed, k)
		}
	}
	return errors.Join(errs...)
}

// scheduleRound decides vms on the synced view: singles through the
// pipeline, gangs (first round only: scheduleGang retries its own) alone.
// It returns the singles whose group lost its guards.
func (r *reconciler) scheduleRound(ctx context.Context, vms []*model.VM, gangsToo bool) ([]*model.VM, error) {
	snap, gen := r.syncView()
	var byVM map[string][]*model.VM
	bp, batching := r.m.cfg.Placer.(BatchPlacer)
	if batching && gangsToo {
		byVM = gangs(vms, r.c.createRevs(vms))
	}
	pl := r.newPipeline(ctx, snap, gen)
	done := map[string]bool{}
	var errs []error
	for _, vm := range vms {
		if ctx.Err() != nil {
			break
		}
		if done[vm.Key()] {
			continue
		}
		var err error
		if gang := byVM[vm.Key()]; gang != nil {
			for _, m := range gang {
				done[m.Key()] = true
			}
			if r.allFailed(gang, gen) {
				continue
			}
			pl.flush() // the gang sees every single decided before it
			err = r.scheduleGang(ctx, bp, snap, gen, gang)
		} else if !r.allFailed([]*model.VM{vm}, gen) {
			err = pl.add(vm)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	lost, err := pl.close()
	return lost, errors.Join(append(errs, err)...)
}

// allFailed reports whether every VM of vms was found to fit nowhere at
// its current revision and capacity generation gen.
func (r *reconciler) allFailed(vms []*model.VM, gen uint64) bool {
	for _, vm := range vms {
		if f, ok := r.failed[vm.Key()]; !ok || f.rev != vm.Revision || f.gen != gen {
			return false
		}
	}
	return true
}

// findHost finds a host of a snapshot's sorted hosts (nil if absent).
func findHost(hosts []model.Host, name string) *model.Host {
	i := sort.Search(len(hosts), func(i int) bool { return hosts[i].Name >= name })
	if i < len(hosts) && hosts[i].Name == name {
		return &hosts[i]
	}
	return nil
}

// knownHost says whether name is a host of snap (the loop's view: its
// index; another snapshot: a search of its sorted hosts).
func (r *reconciler) knownHost(snap *Snapshot, name string) bool {
	if r.sv != nil && r.sv.snap == snap {
		_, ok := r.sv.index[name]
		return ok
	}
	return findHost(snap.Hosts, name) != nil
}

// refreshView takes into the pass's snapshot the cached allocations of
// hosts and the cached policy (after the gate re-read them).
func (r *reconciler) refreshView(snap *Snapshot, hosts ...string) {
	for _, h := range hosts {
		a := r.c.allocOf(h)
		a.Host = h
		snap.setAlloc(a)
	}
	p, rev := r.c.policyOf()
	if rev != snap.PolicyRev {
		r.m.log.Debug("policy changed under a placement", "was", snap.PolicyRev, "now", rev)
		snap.Policy, snap.PolicyRev = p, rev
	}
}

// unschedulable records that vm fits nowhere: the explanation is written
// only when its summary changed (no write storms), and the VM is not
// retried until capacity changes.
func (r *reconciler) unschedulable(ctx context.Context, vm *model.VM, expl *model.Explanation, gen uint64) error {
	memo := failMemo{rev: vm.Revision, gen: gen}
	old := vm.Status.Explanation
	if old != nil && old.Summary == expl.Summary && old.Chosen == "" && vm.Status.Phase == model.PhasePending {
		r.failed[vm.Key()] = memo
		return nil
	}
	now := r.now()
	nv := *vm
	nv.Status.Phase = model.PhasePending
	nv.Status.Explanation = expl
	nv.Status.Message = "waiting for capacity: " + expl.Summary
	nv.UpdatedAt = now
	ops := []store.Op{store.Put(store.VMKey(vm.Project, vm.Name), encodeVM(&nv))}
	ops = append(ops, state.TransitionOps(vm, &nv, now)...)
	if old == nil || old.Chosen != "" {
		ops = append(ops, state.EventOp(model.Event{Time: now, Kind: EventVMUnschedulable, Object: state.VMObject(vm.Project, vm.Name),
			Project: vm.Project, Message: "VM " + vm.Name + " fits no host yet: " + expl.Summary}))
	}
	ok, rev, err := r.repo.Txn(ctx, []store.Cond{store.IfRev(store.VMKey(vm.Project, vm.Name), vm.Revision)}, ops)
	if err != nil {
		return fmt.Errorf("controller: record unschedulable %s: %w", vm.Key(), err)
	}
	if ok {
		memo.rev = rev
		r.c.putVM(&nv, rev)
		r.failed[vm.Key()] = memo
	}
	// on conflict the VM changed: the watch brings it back to a pass
	return nil
}
