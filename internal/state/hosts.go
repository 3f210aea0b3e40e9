package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// DecodeHost decodes a stored host and sets Meta.Revision.
func DecodeHost(kv store.KV) (*model.Host, error) {
	h := &model.Host{}
	if err := decode(kv, h); err != nil {
		return nil, err
	}
	h.Revision = kv.ModRev
	return h, nil
}

func encodeHost(h *model.Host) []byte {
	rev := h.Revision
	h.Revision = 0
	b := encode(h)
	h.Revision = rev
	return b
}

// GetHost returns a host (ErrNotFound when absent).
func (r *Repo) GetHost(ctx context.Context, name string) (*model.Host, error) {
	kv, err := r.st.Get(ctx, store.HostKey(name))
	if err != nil {
		return nil, fmt.Errorf("state: host %s: %w", name, err)
	}
	return DecodeHost(kv)
}

// ListHosts returns every host in name order and the listing's revision.
func (r *Repo) ListHosts(ctx context.Context) ([]*model.Host, int64, error) {
	kvs, rev, err := r.st.List(ctx, store.HostsPrefix)
	if err != nil {
		return nil, 0, fmt.Errorf("state: list hosts: %w", err)
	}
	out := make([]*model.Host, 0, len(kvs))
	for _, kv := range kvs {
		h, err := DecodeHost(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, h)
	}
	return out, rev, nil
}

// AliveHosts returns the names of hosts whose liveness key (attached to
// their lease) exists.
func (r *Repo) AliveHosts(ctx context.Context) (map[string]bool, error) {
	kvs, _, err := r.st.List(ctx, store.AlivePrefix)
	if err != nil {
		return nil, fmt.Errorf("state: list alive: %w", err)
	}
	out := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		out[kv.Key[len(store.AlivePrefix):]] = true
	}
	return out, nil
}

// UpdateHost applies fn to an existing host with compare-and-swap
// (ErrNotFound when absent). A state change writes a host event in the
// same transaction.
func (r *Repo) UpdateHost(ctx context.Context, name string, fn func(*model.Host) error) (*model.Host, error) {
	return r.mutateHost(ctx, name, false, func(h *model.Host, _ bool) error { return fn(h) }, nil, nil)
}

// UpdateHostFilters is UpdateHost for a change to what placement's
// filters read (cordon, state, labels, ratios, a drain). Its transaction
// also rewrites the host's allocation as it stands (or stores an empty
// one), so that a placement the gate checked against the host's earlier
// record — whose commit is guarded on the allocation's revision (Assign)
// — fails its guard, and the gate re-reads the host and decides again.
// Without it a VM created just after a cordon could still land on the
// host: the gate's view of hosts follows a watch.
func (r *Repo) UpdateHostFilters(ctx context.Context, name string, fn func(*model.Host) error) (*model.Host, error) {
	touch := func(ctx context.Context, _ *model.Host) ([]store.Cond, []store.Op, error) {
		key := store.AllocKey(name)
		kv, err := r.st.Get(ctx, key)
		switch {
		case err == nil:
			return []store.Cond{store.IfRev(key, kv.ModRev)}, []store.Op{store.Put(key, kv.Value)}, nil
		case errors.Is(err, store.ErrNotFound):
			return []store.Cond{store.IfAbsent(key)}, []store.Op{store.Put(key, encode(model.Allocation{Host: name, VMs: map[string]bool{}}))}, nil
		default:
			return nil, nil, fmt.Errorf("state: allocation of %s: %w", name, err)
		}
	}
	return r.mutateHost(ctx, name, false, func(h *model.Host, _ bool) error { return fn(h) }, nil, touch)
}

// UpsertHost applies fn to a host, or to a new one (exists false) when
// none is stored; extra ops (e.g. the liveness key) join the transaction.
func (r *Repo) UpsertHost(ctx context.Context, name string, fn func(h *model.Host, exists bool) error, extra ...store.Op) (*model.Host, error) {
	return r.mutateHost(ctx, name, true, fn, extra, nil)
}

// HostGuard returns conditions and ops that join a host write, or an
// error that stops it; it sees the stored host (nil when absent) and
// runs again on every retry.
type HostGuard func(ctx context.Context, old *model.Host) ([]store.Cond, []store.Op, error)

// UpsertHostGuarded is UpsertHost whose transaction also holds guard's
// conditions and ops (HeartbeatGuard: the caller's certificate is the
// host's).
func (r *Repo) UpsertHostGuarded(ctx context.Context, name string, guard HostGuard, fn func(h *model.Host, exists bool) error, extra ...store.Op) (*model.Host, error) {
	return r.mutateHost(ctx, name, true, fn, extra, guard)
}

func (r *Repo) mutateHost(ctx context.Context, name string, create bool, fn func(*model.Host, bool) error, extra []store.Op, guard HostGuard) (*model.Host, error) {
	key := store.HostKey(name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		var old, nh *model.Host
		kv, err := r.st.Get(ctx, key)
		switch {
		case err == nil:
			if old, err = DecodeHost(kv); err != nil {
				return nil, err
			}
			nh, _ = DecodeHost(kv)
		case errors.Is(err, store.ErrNotFound) && create:
			nh = &model.Host{Meta: model.Meta{Name: name, UID: NewID(), CreatedAt: r.now()}}
		default:
			return nil, fmt.Errorf("state: host %s: %w", name, err)
		}
		var gconds []store.Cond
		var gops []store.Op
		if guard != nil {
			if gconds, gops, err = guard(ctx, old); err != nil {
				return nil, err
			}
		}
		if err := fn(nh, old != nil); err != nil {
			if errors.Is(err, ErrSkip) {
				return old, nil
			}
			return nil, err
		}
		now := r.now()
		nh.Name, nh.UpdatedAt = name, now
		var rev int64
		if old != nil {
			rev = old.Revision
			nh.UID, nh.CreatedAt = old.UID, old.CreatedAt
		}
		ops := append([]store.Op{store.Put(key, encodeHost(nh))}, hostTransitionOps(old, nh, now)...)
		ops = append(append(ops, extra...), gops...)
		ok, wrev, err := r.txn(ctx, append([]store.Cond{store.IfRev(key, rev)}, gconds...), ops)
		if err != nil {
			return nil, err
		}
		if ok {
			nh.Revision = wrev
			return nh, nil
		}
	}
	return nil, fmt.Errorf("%w: host %s", ErrContention, name)
}

// DeleteHost forgets a host with no VMs: its record, allocation and
// liveness key. ErrNotEmpty while VMs are assigned to it.
func (r *Repo) DeleteHost(ctx context.Context, name string) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
		h, err := r.GetHost(ctx, name)
		if err != nil {
			return err
		}
		a, err := r.GetAllocation(ctx, name)
		if err != nil {
			return err
		}
		if len(a.VMs) > 0 {
			return fmt.Errorf("%w: host %s holds %d VMs; drain it first", ErrNotEmpty, name, len(a.VMs))
		}
		ok, _, err := r.txn(ctx,
			[]store.Cond{store.IfRev(store.HostKey(name), h.Revision), store.IfRev(store.AllocKey(name), a.Revision)},
			[]store.Op{store.Delete(store.HostKey(name)), store.Delete(store.AllocKey(name)), store.Delete(store.AliveKey(name)),
				EventOp(model.Event{Time: r.now(), Kind: EventHostGone, Object: HostObject(name), Message: "host " + name + " deleted"})})
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("%w: host %s", ErrContention, name)
}
