package state

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// A placement's explanation lives apart from its VM's record
// (store.ExplanationKey, model.StoredExplanation): the record is
// rewritten by every status report and decoded by every server's view
// and the controllers' cache, and the explanation (candidates with their
// score parts) was about half of its bytes. Assign writes it in the
// placement's own transaction, FinishDeleteVM deletes it with the VM,
// GET vm reads it (GetExplanation). The explanation of a VM that fits
// nowhere stays in the record (VMStatus.Explanation): it is the VM's
// state, small, and read from the view by the backlog count, the power
// controller and `vm create --wait`. Records stored before carry the
// placement's explanation in the record: they read the same, and the
// controllers move it out (MoveExplanations).

// moveBatch is how many VMs one transaction of MoveExplanations moves:
// a guard and two writes a VM, under etcd's default cap.
const moveBatch = (MaxTxnOps - 8) / 2

// explanationOp is the write that stores e as vm's placement explanation
// (nil: deletes any stored before).
func explanationOp(vm *model.VM, e *model.Explanation) store.Op {
	key := store.ExplanationKey(vm.Project, vm.Name)
	if e == nil {
		return store.Delete(key)
	}
	return store.Put(key, encode(model.StoredExplanation{UID: vm.UID, Explanation: e}))
}

// GetExplanation returns the scheduler's last explanation for vm: the
// one in its record if it has one (a VM that fits nowhere, or a record
// stored before explanations were kept apart), else the placement's,
// read from its own key; nil when there is none (never placed, or placed
// without one, or the key belongs to an earlier VM of that name).
func (r *Repo) GetExplanation(ctx context.Context, vm *model.VM) (*model.Explanation, error) {
	return ReadExplanation(ctx, r.st, vm)
}

// ReadExplanation is GetExplanation over st: the API server reads with
// the store its view reads (in process from an embedded member:
// store.AppliedReader), not through its repository's wrappers.
func ReadExplanation(ctx context.Context, st store.Store, vm *model.VM) (*model.Explanation, error) {
	if vm.Status.Explanation != nil {
		return vm.Status.Explanation, nil
	}
	kv, err := getSince(ctx, st, store.ExplanationKey(vm.Project, vm.Name), vm.Revision)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: explanation of vm %s: %w", vm.Key(), err)
	}
	var se model.StoredExplanation
	if err := decode(kv, &se); err != nil {
		return nil, err
	}
	if se.UID != vm.UID {
		return nil, nil
	}
	return se.Explanation, nil
}

// getSince reads key as of a revision at least rev: in process from an
// embedded member that has applied rev (store.AppliedReader), else with
// Get. A placement's explanation is written with a version of its VM at
// or before the one the caller holds, so any state since that VM's
// revision has it (or a later one, or none when the VM is gone).
func getSince(ctx context.Context, st store.Store, key string, rev int64) (store.KV, error) {
	if ar, ok := st.(store.AppliedReader); ok && rev > 0 {
		return ar.GetApplied(ctx, key, rev)
	}
	return st.Get(ctx, key)
}

// HasEmbeddedPlacement reports whether vm's record carries its
// placement's explanation (stored before explanations were kept apart):
// MoveExplanations moves it out.
func HasEmbeddedPlacement(vm *model.VM) bool {
	return vm.Status.Host != "" && vm.Status.Explanation != nil
}

// MoveExplanations moves the placement explanations that vms' records
// carry (HasEmbeddedPlacement; the others are skipped) to their own
// keys: each VM's record is written again without it, guarded on the
// revision given, in the same transaction as its explanation. A VM that
// changed meanwhile is left for a later call. It answers how many moved.
func (r *Repo) MoveExplanations(ctx context.Context, vms []*model.VM) (int, error) {
	var todo []*model.VM
	for _, vm := range vms {
		if HasEmbeddedPlacement(vm) {
			todo = append(todo, vm)
		}
	}
	moved := 0
	for len(todo) > 0 {
		n := min(len(todo), moveBatch)
		batch := todo[:n]
		todo = todo[n:]
		ok, err := r.moveExplanations(ctx, batch)
		if err != nil {
			return moved, err
		}
		if ok {
			moved += n
			continue
		}
		for _, vm := range batch { // one of them changed: each alone
			ok, err := r.moveExplanations(ctx, []*model.VM{vm})
			if err != nil {
				return moved, err
			}
			if ok {
				moved++
			}
		}
	}
	return moved, nil
}

func (r *Repo) moveExplanations(ctx context.Context, vms []*model.VM) (bool, error) {
	conds := make([]store.Cond, 0, len(vms))
	ops := make([]store.Op, 0, 2*len(vms))
	for _, vm := range vms {
		nv := *vm
		nv.Status.Explanation = nil
		key := store.VMKey(vm.Project, vm.Name)
		conds = append(conds, store.IfRev(key, vm.Revision))
		ops = append(ops, store.Put(key, encodeVM(&nv)), explanationOp(vm, vm.Status.Explanation))
	}
	ok, _, err := r.txn(ctx, conds, ops)
	return ok, err
}

// PruneExplanations deletes stored explanations whose VM is gone or is
// another VM of the same name (written by a server from before they
// were kept apart, which deleted VMs without them). vm answers the VM a
// key names as the caller knows it (nil: none); each deletion is guarded
// on the explanation's revision and on the VM's absence, or on the
// revision of the VM as vm gave it, so a VM placed meanwhile keeps its
// explanation. It answers how many it deleted.
func (r *Repo) PruneExplanations(ctx context.Context, vm func(project, name string) *model.VM) (int, error) {
	kvs, _, err := r.st.List(ctx, store.ExplanationsPrefix)
	if err != nil {
		return 0, fmt.Errorf("state: list explanations: %w", err)
	}
	pruned := 0
	for _, kv := range kvs {
		project, name, ok := strings.Cut(strings.TrimPrefix(kv.Key, store.ExplanationsPrefix), "/")
		if !ok {
			continue
		}
		vkey := store.VMKey(project, name)
		conds := []store.Cond{store.IfRev(kv.Key, kv.ModRev)}
		switch v := vm(project, name); {
		case v == nil:
			conds = append(conds, store.IfAbsent(vkey))
		default:
			var se struct {
				UID string `json:"uid"`
			} // the UID alone: the rest is not decoded
			if err := decode(kv, &se); err == nil && se.UID == v.UID {
				continue
			}
			conds = append(conds, store.IfRev(vkey, v.Revision))
		}
		ok, _, err := r.txn(ctx, conds, []store.Op{store.Delete(kv.Key)})
		if err != nil {
			return pruned, fmt.Errorf("state: prune explanation of %s/%s: %w", project, name, err)
		}
		if ok {
			pruned++
		}
	}
	return pruned, nil
}
