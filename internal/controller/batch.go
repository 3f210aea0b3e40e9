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

// scheduleGang places a gang all or nothing and has the gate commit it in
// one transaction guarded on every member's revision, every touched
// host's allocation revision and the policy's revision; if any member
// fits nowhere, every member stays pending with an explanation. On a
// lost compare-and-swap it re-reads what the guards compared and tries
// again.
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
		ps := make([]Placement, len(vms))
		for i, vm := range vms {
			if !r.knownHost(snap, choices[i].Host) {
				return fmt.Errorf("%w: %s for VM %s: no such host", ErrPlacerBroke, choices[i].Host, vm.Key())
			}
			ps[i] = Placement{VM: vm, Host: choices[i].Host, Explanation: choices[i].Explanation}
		}
		out, ok, err := r.gate.place(ctx, ps)
		if err != nil {
			return err
		}
		if ok {
			for _, h := range sortedKeys(out.Allocs) {
				snap.setAlloc(out.Allocs[h])
			}
			for i, vm := range vms {
				delete(r.failed, vm.Key())
				r.m.log.Info("placed VM", "vm", vm.Key(), "host", choices[i].Host, "gang", len(vms))
			}
			return nil
		}
		r.m.log.Debug("placement lost its compare-and-swap, re-reading", "vm", vms[0].Key(), "gang", len(vms))
		if vms, err = r.refreshGang(ctx, snap, vms, ps); err != nil || len(vms) == 0 {
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

// refreshGang takes into the pass's snapshot, after a lost
// compare-and-swap, what the gate re-read (the allocations of the hosts
// the gang was to use, the policy) and re-reads the members; it returns
// the members that still need placement.
func (r *reconciler) refreshGang(ctx context.Context, snap *Snapshot, vms []*model.VM, ps []Placement) ([]*model.VM, error) {
	hosts := map[string]bool{}
	for _, p := range ps {
		hosts[p.Host] = true
	}
	r.refreshView(snap, sortedKeys(hosts)...)
	var left []*model.VM
	for _, vm := range vms {
		fresh, err := r.repo.GetVM(ctx, vm.Project, vm.Name)
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
