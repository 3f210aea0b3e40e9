package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/store"
)

// fencedStore adds a leadership term's guard to every transaction. A
// transaction whose conditions fail is checked against the guard alone:
// if the guard is what failed, the caller gets ErrNotLeader rather than
// a conflict it would retry.
type fencedStore struct {
	store.Store
	guard []store.Cond
}

// Txn implements store.Store.
func (f *fencedStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	all := make([]store.Cond, 0, len(conds)+len(f.guard))
	all = append(append(all, conds...), f.guard...)
	ok, rev, err := f.Store.Txn(ctx, all, ops)
	if err != nil || ok {
		return ok, rev, err
	}
	held, err := f.holds(ctx)
	if err != nil {
		return false, rev, err
	}
	if !held {
		return false, rev, fmt.Errorf("%w: the leader key changed", ErrNotLeader)
	}
	return false, rev, nil
}

// holds reports whether every guard condition holds now.
func (f *fencedStore) holds(ctx context.Context) (bool, error) {
	for _, c := range f.guard {
		kv, err := f.Store.Get(ctx, c.Key)
		exists := err == nil
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, fmt.Errorf("state: check leadership: %w", err)
		}
		switch c.Kind {
		case store.ModRevEquals:
			if (c.Rev == 0 && exists) || (c.Rev != 0 && (!exists || kv.ModRev != c.Rev)) {
				return false, nil
			}
		case store.Exists:
			if !exists {
				return false, nil
			}
		case store.Absent:
			if exists {
				return false, nil
			}
		}
	}
	return true, nil
}
