package controller

import (
	"context"
	"errors"
	"fmt"

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

// schedule places every pending VM, oldest first.
func (r *reconciler) schedule(ctx context.Context) error {
	if !r.repaired {
		return nil // repairOnce reports why
	}
	pending := r.c.vmList(needsPlacement)
	keep := make(map[string]bool, len(pending))
	if len(pending) == 0 {
		clear(r.failed)
		return nil
	}
	snap, gen := r.c.snapshot()
	snap.Now = r.now()
	snap.Epoch = r.m.epochs.Add(1) // unique across terms: the Placer outlives them
	var byVM map[string][]*model.VM
	bp, batching := r.m.cfg.Placer.(BatchPlacer)
	if batching {
		byVM = gangs(pending, r.c.createRevs(pending))
	}
	done := map[string]bool{}
	var errs []error
	for _, vm := range pending {
		keep[vm.Key()] = true
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
			err = r.scheduleGang(ctx, bp, snap, gen, gang)
		} else {
			if r.allFailed([]*model.VM{vm}, gen) {
				continue
			}
			err = r.scheduleOne(ctx, snap, gen, vm)
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			errs = append(errs, err)
		}
	}
	for k := range r.failed {
		if !keep[k] {
			delete(r.failed, k)
		}
	}
	return errors.Join(errs...)
}

// scheduleOne asks the Placer for a host and has the gate commit the
// choice; when the gate's guards fail it re-reads the VM (the gate
// re-read the host's allocation and the policy into the cache) and asks
// again. snap.Allocs is kept current with this process's commits.
func (r *reconciler) scheduleOne(ctx context.Context, snap *Snapshot, gen uint64, vm *model.VM) error {
	for range maxCommitAttempts {
		host, expl := r.m.cfg.Placer.Place(snap, vm)
		if expl == nil {
			expl = &model.Explanation{Time: snap.Now, Hosts: len(snap.Hosts), Chosen: host}
		}
		if host == "" {
			return r.unschedulable(ctx, vm, expl, gen)
		}
		if findHost(snap.Hosts, host) == nil {
			return fmt.Errorf("%w: %s for VM %s: no such host", ErrPlacerBroke, host, vm.Key())
		}
		out, ok, err := r.gate.place(ctx, []Placement{{VM: vm, Host: host, Explanation: expl}})
		if err != nil {
			return err
		}
		if ok {
			snap.setAlloc(out.Allocs[host])
			delete(r.failed, vm.Key())
			r.m.log.Info("placed VM", "vm", vm.Key(), "host", host)
			return nil
		}
		// Lost a race: take what the gate re-read, re-read the VM.
		r.m.log.Debug("placement lost its compare-and-swap, re-reading", "vm", vm.Key(), "host", host)
		r.refreshView(snap, host)
		fresh, err := r.repo.GetVM(ctx, vm.Project, vm.Name)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if !needsPlacement(fresh) {
			return nil
		}
		vm = fresh
	}
	return fmt.Errorf("controller: placing VM %s: %w", vm.Key(), state.ErrContention)
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

func findHost(hosts []model.Host, name string) *model.Host {
	for i := range hosts {
		if hosts[i].Name == name {
			return &hosts[i]
		}
	}
	return nil
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
