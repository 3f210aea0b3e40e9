package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// MaxSnapshots bounds the snapshots one VM may hold (each is a qcow2
// layer in every disk's chain).
const MaxSnapshots = 32

// ErrSnapshotLimit says a VM holds MaxSnapshots already.
var ErrSnapshotLimit = errors.New("state: too many snapshots")

// DecodeSnapshot decodes a stored snapshot and sets its revision.
func DecodeSnapshot(kv store.KV) (*model.Snapshot, error) {
	s := &model.Snapshot{}
	if err := decode(kv, s); err != nil {
		return nil, err
	}
	s.Revision = kv.ModRev
	return s, nil
}

func encodeSnapshot(s *model.Snapshot) []byte {
	rev := s.Revision
	s.Revision = 0
	b := encode(s)
	s.Revision = rev
	return b
}

// GetSnapshot returns one snapshot of a VM.
func (r *Repo) GetSnapshot(ctx context.Context, project, vm, name string) (*model.Snapshot, error) {
	kv, err := r.st.Get(ctx, store.SnapshotKey(project, vm, name))
	if err != nil {
		return nil, fmt.Errorf("state: snapshot %s/%s/%s: %w", project, vm, name, err)
	}
	return DecodeSnapshot(kv)
}

// ListSnapshots returns the snapshots of one VM, or of every VM when vm
// and project are empty, in key order.
func (r *Repo) ListSnapshots(ctx context.Context, project, vm string) ([]*model.Snapshot, int64, error) {
	prefix := store.SnapshotsPrefix
	if project != "" {
		prefix = store.VMSnapshotsPrefix(project, vm)
	}
	kvs, rev, err := r.st.List(ctx, prefix)
	if err != nil {
		return nil, 0, fmt.Errorf("state: list snapshots: %w", err)
	}
	out := make([]*model.Snapshot, 0, len(kvs))
	for _, kv := range kvs {
		s, err := DecodeSnapshot(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, s)
	}
	return out, rev, nil
}

// CreateSnapshot stores a snapshot request (phase pending) for an assigned
// VM, guarded on the VM's revision so that a request never lands on a VM
// that moved or went away meanwhile. Errors: ErrNotFound (the VM),
// ErrExists, ErrSnapshotLimit.
func (r *Repo) CreateSnapshot(ctx context.Context, vm *model.VM, s *model.Snapshot) (*model.Snapshot, error) {
	have, _, err := r.ListSnapshots(ctx, vm.Project, vm.Name)
	if err != nil {
		return nil, err
	}
	if len(have) >= MaxSnapshots {
		return nil, fmt.Errorf("%w: VM %s holds %d", ErrSnapshotLimit, vm.Key(), len(have))
	}
	now := r.now()
	s.Project, s.VM, s.Host = vm.Project, vm.Name, vm.Status.Host
	s.UID, s.CreatedAt, s.UpdatedAt = NewID(), now, now
	s.Phase = model.SnapshotPending
	key := store.SnapshotKey(vm.Project, vm.Name, s.Name)
	ok, rev, err := r.txn(ctx,
		[]store.Cond{store.IfRev(store.VMKey(vm.Project, vm.Name), vm.Revision), store.IfAbsent(key)},
		[]store.Op{store.Put(key, encodeSnapshot(s)), EventOp(model.Event{Time: now, Kind: "snapshot.created",
			Object: VMObject(vm.Project, vm.Name), Project: vm.Project, Message: "snapshot " + s.Name + " requested"})})
	if err != nil {
		return nil, err
	}
	if !ok {
		if _, err := r.st.Get(ctx, key); err == nil {
			return nil, fmt.Errorf("%w: snapshot %q of %s", ErrExists, s.Name, vm.Key())
		}
		return nil, fmt.Errorf("%w: vm %s changed; try again", ErrContention, vm.Key())
	}
	s.Revision = rev
	return s, nil
}

// UpdateSnapshot applies fn with compare-and-swap, retrying on conflict;
// fn may return ErrSkip.
func (r *Repo) UpdateSnapshot(ctx context.Context, project, vm, name string, fn func(*model.Snapshot) error) (*model.Snapshot, error) {
	key := store.SnapshotKey(project, vm, name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		kv, err := r.st.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("state: snapshot %s/%s/%s: %w", project, vm, name, err)
		}
		old, err := DecodeSnapshot(kv)
		if err != nil {
			return nil, err
		}
		nv, _ := DecodeSnapshot(kv)
		if err := fn(nv); err != nil {
			if errors.Is(err, ErrSkip) {
				return old, nil
			}
			return nil, err
		}
		nv.Name, nv.Project, nv.VM, nv.UID, nv.CreatedAt = old.Name, old.Project, old.VM, old.UID, old.CreatedAt
		nv.UpdatedAt = r.now()
		ops := append([]store.Op{store.Put(key, encodeSnapshot(nv))}, snapshotOps(old, nv, nv.UpdatedAt)...)
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(key, old.Revision)}, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			nv.Revision = rev
			return nv, nil
		}
	}
	return nil, fmt.Errorf("%w: snapshot %s/%s/%s", ErrContention, project, vm, name)
}

// DeleteSnapshot removes a snapshot record (absent is not an error) with
// a snapshot.deleted event.
func (r *Repo) DeleteSnapshot(ctx context.Context, project, vm, name string) error {
	key := store.SnapshotKey(project, vm, name)
	ok, _, err := r.txn(ctx, []store.Cond{store.IfExists(key)}, []store.Op{store.Delete(key),
		EventOp(model.Event{Time: r.now(), Kind: EventSnapshotDeleted, Object: VMObject(project, vm), Project: project,
			Message: fmt.Sprintf("VM %s: snapshot %s deleted", vm, name)})})
	if err != nil || !ok {
		return err
	}
	return nil
}

// snapshotDeleteOps deletes the records of every snapshot of a VM (its
// disks, and with them the snapshots, are gone).
func (r *Repo) snapshotDeleteOps(ctx context.Context, project, vm string) ([]store.Op, error) {
	kvs, _, err := r.st.List(ctx, store.VMSnapshotsPrefix(project, vm))
	if err != nil {
		return nil, fmt.Errorf("state: list snapshots: %w", err)
	}
	ops := make([]store.Op, 0, len(kvs))
	for _, kv := range kvs {
		ops = append(ops, store.Delete(kv.Key))
	}
	return ops, nil
}
