package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// VMReservation is what a VM's reservations hold 1:1 on its host: whole
// CPUs rounded up from Controls.CPUReservation (milli-CPUs), and
// Controls.MemoryReservation.
func VMReservation(s *model.VMSpec) model.Resources {
	return model.Resources{CPUs: (s.Controls.CPUReservation + 999) / 1000, Memory: s.Controls.MemoryReservation}
}

// AllocAdd records on a that vm holds its demand on a's host
// (model.Allocation.AddVM: the one definition of what a VM holds, which
// the placement engine reads too). Adding a VM already present does
// nothing.
func AllocAdd(a *model.Allocation, vm *model.VM) { a.AddVM(vm.Key(), &vm.Spec) }

// AllocRelease removes vm from a (the inverse of AllocAdd for the same
// spec). Releasing a VM that is not present does nothing.
func AllocRelease(a *model.Allocation, vm *model.VM) { a.ReleaseVM(vm.Key(), &vm.Spec) }

func decodeAlloc(kv store.KV) (*model.Allocation, error) {
	a := &model.Allocation{}
	if err := decode(kv, a); err != nil {
		return nil, err
	}
	a.Revision = kv.ModRev
	if a.VMs == nil {
		a.VMs = map[string]bool{}
	}
	return a, nil
}

// GetAllocation returns a host's allocation; an empty one (Revision 0)
// when none is stored yet.
func (r *Repo) GetAllocation(ctx context.Context, host string) (*model.Allocation, error) {
	kv, err := r.st.Get(ctx, store.AllocKey(host))
	if errors.Is(err, store.ErrNotFound) {
		return &model.Allocation{Host: host, VMs: map[string]bool{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: get allocation %s: %w", host, err)
	}
	return decodeAlloc(kv)
}

// ListAllocations returns every stored allocation by host name.
func (r *Repo) ListAllocations(ctx context.Context) (map[string]*model.Allocation, int64, error) {
	kvs, rev, err := r.st.List(ctx, store.AllocPrefix)
	if err != nil {
		return nil, 0, fmt.Errorf("state: list allocations: %w", err)
	}
	out := make(map[string]*model.Allocation, len(kvs))
	for _, kv := range kvs {
		a, err := decodeAlloc(kv)
		if err != nil {
			return nil, 0, err
		}
		out[a.Host] = a
	}
	return out, rev, nil
}

// UpdateAllocation applies fn to a host's allocation (an empty one when
// none is stored) and writes it with compare-and-swap, retrying on
// conflict. Prefer UpdateVM / PlaceVM, which keep VM and allocation in one
// transaction; this is for repairs.
func (r *Repo) UpdateAllocation(ctx context.Context, host string, fn func(*model.Allocation) error) (*model.Allocation, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		a, err := r.GetAllocation(ctx, host)
		if err != nil {
			return nil, err
		}
		if err := fn(a); err != nil {
			if errors.Is(err, ErrSkip) {
				return a, nil
			}
			return nil, err
		}
		a.Host = host
		a.UpdatedAt = r.now()
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(store.AllocKey(host), a.Revision)},
			[]store.Op{store.Put(store.AllocKey(host), encode(a))})
		if err != nil {
			return nil, err
		}
		if ok {
			a.Revision = rev
			return a, nil
		}
	}
	return nil, fmt.Errorf("%w: allocation %s", ErrContention, host)
}
