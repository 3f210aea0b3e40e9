package controller

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// maxTxnOps is etcd's default cap on the operations (and, separately, the
// comparisons) of one transaction.
const maxTxnOps = 128

// BatchPlacer is a Placer that also places several VMs together, each
// seeing the ones before it, with every hard affinity or anti-affinity
// group among them placed all or nothing (scheduler.PlaceBatch). The
// scheduling controller uses it for a gang: the pending members of one
// hard group created by one request. A Placer without it places a gang's
// members one by one (no all-or-nothing guarantee).
type BatchPlacer interface {
	Placer
	// PlaceBatch answers one Choice per VM, in order. It must leave no
	// trace in any state it keeps across calls: the controller feeds the
	// committed allocations back through Snapshot.Changed.
	PlaceBatch(s *Snapshot, vms []*model.VM) []Choice
}

// Choice is one VM's answer in a batch: its host ("" = not placed) and
// the explanation.
type Choice struct {
	Host        string
	Explanation *model.Explanation
}

// hardGroup returns "project/group" for a VM in a hard affinity or
// anti-affinity group, else "".
func hardGroup(vm *model.VM) string {
	p := &vm.Spec.Placement
	if p.AffinityGroup == "" || (p.Affinity != model.AffinityHard && p.Affinity != model.AntiAffinityHard) {
		return ""
	}
	return vm.Project + "/" + p.AffinityGroup
}

// gangs groups pending VMs (oldest first) into gangs: the members of one
// hard group created by one request (same create revision: one
// transaction, i.e. one batch). It returns, per VM key, the gang of two
// or more that VM belongs to; VMs absent from the map are placed alone.
func gangs(pending []*model.VM, created []int64) map[string][]*model.VM {
	byGang := map[string][]*model.VM{}
	for i, vm := range pending {
		g := hardGroup(vm)
		if g == "" || created[i] == 0 {
			continue
		}
		k := strconv.FormatInt(created[i], 10) + "/" + g
		byGang[k] = append(byGang[k], vm)
	}
	out := map[string][]*model.VM{}
	for _, members := range byGang {
		if len(members) < 2 {
			continue
		}
		for _, vm := range members {
			out[vm.Key()] = members
		}
	}
	return out
}

// scheduleGang places a gang all or nothing and commits it in one
// transaction guarded on every member's revision, every touched host's
// allocation revision and the policy's revision; if any member fits nowhere, every member
// stays pending with an explanation. On a lost compare-and-swap it
// re-reads what the guards compared and tries again.
func (r *reconciler) scheduleGang(ctx context.Context, bp BatchPlacer, snap *Snapshot, gen uint64, vms []*model.VM) error {
	for range maxCommitAttempts {
		choices := bp.PlaceBatch(snap, vms)
		if len(choices) != len(vms) {
			return fmt.Errorf("%w: %d answers for %d VMs", ErrPlacerBroke, len(choices), len(vms))
		}
		for i := range choices {
			if choices[i].Explanation == nil {
				choices[i].Explanation = &model.Explanation{Time: snap.Now, Hosts: len(snap.Hosts), Chosen: choices[i].Host}
			}
		}
		if !allPlaced(choices) {
			var errs []error
			for i, vm := range vms {
				errs = append(errs, r.unschedulable(ctx, vm, choices[i].Explanation, gen))
			}
			return errors.Join(errs...)
		}
		base, allocs, err := gangAllocs(snap, vms, choices)
		if err != nil {
			return err
		}
		ok, err := r.commitGang(ctx, vms, choices, base, allocs, snap.PolicyRev)
		if err != nil {
			return err
		}
		if ok {
			for _, h := range sortedKeys(allocs) {
				snap.setAlloc(allocs[h])
			}
			for i, vm := range vms {
				delete(r.failed, vm.Key())
				r.m.log.Info("placed VM", "vm", vm.Key(), "host", choices[i].Host, "gang", len(vms))
			}
			return nil
		}
		r.m.log.Debug("placement lost its compare-and-swap, re-reading", "vm", vms[0].Key(), "gang", len(vms))
		if vms, err = r.refreshGang(ctx, snap, vms, base); err != nil || len(vms) == 0 {
			return err
		}
	}
	return fmt.Errorf("controller: placing group of %s: %w", vms[0].Key(), state.ErrContention)
}

func allPlaced(cs []Choice) bool {
	for _, c := range cs {
		if c.Host == "" {
			return false
		}
	}
	return true
}

// gangAllocs re-checks every choice against capacity × ratio (members on
// one host add up) and returns the touched hosts' allocation revisions as
// read and their allocations with the members added.
func gangAllocs(snap *Snapshot, vms []*model.VM, choices []Choice) (map[string]int64, map[string]model.Allocation, error) {
	base := map[string]int64{}
	allocs := map[string]model.Allocation{}
	for i, vm := range vms {
		host := choices[i].Host
		h := findHost(snap.Hosts, host)
		if h == nil {
			return nil, nil, fmt.Errorf("%w: %s for VM %s: no such host", ErrPlacerBroke, host, vm.Key())
		}
		a, seen := allocs[host]
		if !seen {
			a = snap.Allocs[host]
			a.Host = host
			base[host] = a.Revision
		}
		if why := Fits(h, a, snap.Policy, &vm.Spec); why != "" {
			return nil, nil, fmt.Errorf("%w: %s for VM %s: %s", ErrPlacerBroke, host, vm.Key(), why)
		}
		allocs[host] = allocAdd(a, host, vm)
	}
	return base, allocs, nil
}

// commitGang writes a gang's placement in one transaction. The phase
// events go in the same transaction when they fit under etcd's cap of
// maxTxnOps operations, else in a second one right after (events are a
// log, not state: a crash in between loses only them).
func (r *reconciler) commitGang(ctx context.Context, vms []*model.VM, choices []Choice, base map[string]int64, allocs map[string]model.Allocation, polRev int64) (bool, error) {
	now := r.now()
	hosts := sortedKeys(allocs)
	conds := make([]store.Cond, 0, len(vms)+len(hosts))
	ops := make([]store.Op, 0, len(vms)+len(hosts))
	var events []store.Op
	placed := make([]*model.VM, len(vms))
	for i, vm := range vms {
		nv := *vm
		nv.Status.Host = choices[i].Host
		nv.Status.Phase = model.PhaseCreating
		nv.Status.Explanation = choices[i].Explanation
		nv.Status.Message = ""
		nv.UpdatedAt = now
		placed[i] = &nv
		conds = append(conds, store.IfRev(store.VMKey(vm.Project, vm.Name), vm.Revision))
		ops = append(ops, store.Put(store.VMKey(vm.Project, vm.Name), encodeVM(&nv)))
		events = append(events, state.TransitionOps(vm, &nv, now)...)
	}
	for _, h := range hosts {
		a := allocs[h]
		a.UpdatedAt = now
		allocs[h] = a
		conds = append(conds, store.IfRev(store.AllocKey(h), base[h]))
		ops = append(ops, store.Put(store.AllocKey(h), mustJSON(a)))
	}
	conds = r.t.guard(append(conds, store.IfRev(store.PolicyKey, polRev))...)
	if len(ops) > maxTxnOps || len(conds) > maxTxnOps {
		return false, fmt.Errorf("controller: group of %d VMs on %d hosts needs %d operations, over etcd's %d", len(vms), len(hosts), len(ops), maxTxnOps)
	}
	inline := len(ops)+len(events) <= maxTxnOps
	if inline {
		ops = append(ops, events...)
	}
	ok, rev, err := r.st.Txn(ctx, conds, ops)
	if err != nil {
		return false, fmt.Errorf("controller: commit placement of group of %s: %w", vms[0].Key(), err)
	}
	if !ok {
		return false, nil
	}
	for _, nv := range placed {
		r.c.putVM(nv, rev)
	}
	for _, h := range hosts {
		a := allocs[h]
		a.Revision = rev
		allocs[h] = a
		r.c.putAlloc(a, rev)
	}
	if !inline {
		for len(events) > 0 {
			n := min(len(events), maxTxnOps)
			if _, _, err := r.st.Txn(ctx, nil, events[:n]); err != nil {
				return true, fmt.Errorf("controller: record placement events: %w", err)
			}
			events = events[n:]
		}
	}
	return true, nil
}

// refreshGang re-reads, after a lost compare-and-swap, the allocations of
// the hosts the gang was to use, the policy and the members; it returns the members
// that still need placement.
func (r *reconciler) refreshGang(ctx context.Context, snap *Snapshot, vms []*model.VM, base map[string]int64) ([]*model.VM, error) {
	for _, h := range sortedKeys(base) {
		fa, err := r.m.repo.GetAllocation(ctx, h)
		if err != nil {
			return nil, err
		}
		fa.Host = h
		snap.setAlloc(*fa)
		r.c.putAlloc(*fa, fa.Revision)
	}
	if err := r.refreshPolicy(ctx, snap); err != nil {
		return nil, err
	}
	var left []*model.VM
	for _, vm := range vms {
		fresh, err := r.m.repo.GetVM(ctx, vm.Project, vm.Name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if needsPlacement(fresh) {
			left = append(left, fresh)
		}
	}
	return left, nil
}
