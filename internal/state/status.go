package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// ErrNotStatusOnly says a write given to ReplaceVMs changes more than a
// VM's status (its host, demand or placement): use UpdateVM, which keeps
// the usage and the allocations in step.
var ErrNotStatusOnly = errors.New("state: not a status-only change")

// StatusWrite is one VM of ReplaceVMs: as read (Old, with its revision)
// and as it is to be stored (New).
type StatusWrite struct {
	Old, New *model.VM
	// Stored is set by ReplaceVMs to the JSON it wrote for New (without
	// the revision: VMJSON splices it in), so that callers answering
	// with the VM need not encode it again.
	Stored []byte
}

// ReplaceVMs stores status changes of many VMs (agents' reports) in one
// transaction, all or nothing, each guarded on the revision it was read
// at, with the events of their phase changes. ok false: a guard failed
// and nothing was written (the caller re-reads and applies them one by
// one). The writes must fit in one transaction (two operations each).
func (r *Repo) ReplaceVMs(ctx context.Context, ws []StatusWrite) (bool, int64, error) {
	now := r.now()
	conds := make([]store.Cond, 0, len(ws))
	ops := make([]store.Op, 0, 2*len(ws))
	for i, w := range ws {
		o, n := w.Old, w.New
		if o.Project != n.Project || o.Name != n.Name || o.Status.Host != n.Status.Host || o.Spec.Demand() != n.Spec.Demand() ||
			VMReservation(&o.Spec) != VMReservation(&n.Spec) ||
			o.Spec.Placement.AffinityGroup != n.Spec.Placement.AffinityGroup || o.Spec.Placement.IsolationDomain != n.Spec.Placement.IsolationDomain {
			return false, 0, fmt.Errorf("%w: VM %s", ErrNotStatusOnly, o.Key())
		}
		nv := *n
		nv.UID, nv.CreatedAt, nv.UpdatedAt = o.UID, o.CreatedAt, now
		key := store.VMKey(o.Project, o.Name)
		conds = append(conds, store.IfRev(key, o.Revision))
		b := encodeVM(&nv)
		ws[i].Stored = b
		ops = append(ops, store.Put(key, b))
		ops = append(ops, TransitionOps(o, &nv, now)...)
	}
	if len(ops) > MaxTxnOps || len(conds) > MaxTxnOps {
		return false, 0, fmt.Errorf("state: %d status writes need %d operations, over etcd's %d", len(ws), len(ops), MaxTxnOps)
	}
	ok, rev, err := r.txn(ctx, conds, ops)
	if err != nil || !ok {
		return false, rev, err
	}
	for _, w := range ws {
		w.New.Revision, w.New.UpdatedAt = rev, now
	}
	return true, rev, nil
}
