package state

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Migration event kinds: "migration." + phase for every phase a migration
// enters, and vm.moved when a VM's host changes by a switch-over.
const (
	EventMigration = "migration."
	EventVMMoved   = "vm.moved"
)

// ErrMigrating says the VM already has a migration under way.
var ErrMigrating = errors.New("state: VM is already migrating")

// ErrRefused says a migration's pre-checks refused it; the error's text
// says why (no capacity, placement rules, target not ready, networks,
// incompatible hypervisors).
var ErrRefused = errors.New("migration refused")

// ErrMoved says the VM is no longer where the migration expects it.
var ErrMoved = errors.New("state: VM is not on the migration's source host")

// MigrationObject is the Event.Object of a migration.
func MigrationObject(id string) string { return "migration/" + id }

// DecodeMigration decodes a stored migration and sets Meta.Revision.
func DecodeMigration(kv store.KV) (*model.Migration, error) {
	m := &model.Migration{}
	if err := decode(kv, m); err != nil {
		return nil, err
	}
	m.Revision = kv.ModRev
	return m, nil
}

func encodeMigration(m *model.Migration) []byte {
	c := *m
	c.Revision = 0
	return encode(&c)
}

// GetMigration returns one migration (ErrNotFound when absent).
func (r *Repo) GetMigration(ctx context.Context, id string) (*model.Migration, error) {
	kv, err := r.st.Get(ctx, store.MigrationKey(id))
	if err != nil {
		return nil, fmt.Errorf("state: migration %s: %w", id, err)
	}
	return DecodeMigration(kv)
}

// ListMigrations returns the migrations of one project ("" = all), newest
// first, and the listing's revision.
func (r *Repo) ListMigrations(ctx context.Context, project string) ([]*model.Migration, int64, error) {
	kvs, rev, err := r.st.List(ctx, store.MigrationsPrefix)
	if err != nil {
		return nil, 0, fmt.Errorf("state: list migrations: %w", err)
	}
	out := make([]*model.Migration, 0, len(kvs))
	for _, kv := range kvs {
		m, err := DecodeMigration(kv)
		if err != nil {
			return nil, 0, err
		}
		if project == "" || m.Project == project {
			out = append(out, m)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.After(out[j].CreatedAt) })
	return out, rev, nil
}

// migrationEvent is the event of a migration entering its phase.
func migrationEvent(m *model.Migration, from model.MigrationPhase, now time.Time) store.Op {
	msg := fmt.Sprintf("%s migration of VM %s %s → %s: %s", m.Mode, m.VM, m.Source, m.Target, m.Phase)
	switch {
	case m.Phase == model.MigrationCompleted && m.Result != nil:
		msg += fmt.Sprintf(" (total %d ms, downtime %d ms, %d bytes)", m.Result.TotalMs, m.Result.DowntimeMs, m.Result.BytesSent)
	case m.Reason != "" && m.Phase.Final():
		msg += ": " + m.Reason
	}
	return EventOp(model.Event{Time: now, Kind: EventMigration + string(m.Phase), Object: MigrationObject(m.Name),
		Project: m.Project, From: string(from), To: string(m.Phase), Message: msg})
}

// CreateMigration stores m (phase pending, a new id unless m.Name is
// set) and marks its VM with the migration's id, in one transaction
// guarded on the VM's revision: the VM must still be on m.Source, not
// being deleted and not already migrating (ErrMigrating, ErrMoved).
// extra guards join the transaction (the controller's leadership fence).
func (r *Repo) CreateMigration(ctx context.Context, m *model.Migration, extra ...store.Cond) (*model.Migration, error) {
	c := *m
	if c.Name == "" {
		c.Name = NewID()[:16]
	}
	now := r.now()
	c.CreatedAt, c.UpdatedAt, c.Phase, c.UID = now, now, model.MigrationPending, NewID()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		vm, err := r.GetVM(ctx, c.Project, c.VM)
		if err != nil {
			return nil, err
		}
		if err := migratable(vm, c.Source); err != nil {
			return nil, err
		}
		vm.Status.Migration = c.Name
		vm.UpdatedAt = now
		conds := append([]store.Cond{store.IfAbsent(store.MigrationKey(c.Name)), store.IfRev(store.VMKey(c.Project, c.VM), vm.Revision)}, extra...)
		ops := []store.Op{
			store.Put(store.MigrationKey(c.Name), encodeMigration(&c)),
			store.Put(store.VMKey(c.Project, c.VM), encodeVM(vm)),
			migrationEvent(&c, "", now),
		}
		ok, rev, err := r.txn(ctx, conds, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			c.Revision = rev
			return &c, nil
		}
	}
	return nil, fmt.Errorf("%w: migration of %s/%s", ErrContention, c.Project, c.VM)
}

// UpdateMigration applies fn to a migration with compare-and-swap,
// retrying on conflict; entering a new phase writes its event (and stamps
// FinishedAt on a final one). fn may return ErrSkip. Use FinishMigration
// and SwitchOver for the final phases that touch the VM.
func (r *Repo) UpdateMigration(ctx context.Context, id string, fn func(*model.Migration) error, extra ...store.Cond) (*model.Migration, error) {
	key := store.MigrationKey(id)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		old, err := r.GetMigration(ctx, id)
		if err != nil {
			return nil, err
		}
		nm := *old
		if err := fn(&nm); err != nil {
			if errors.Is(err, ErrSkip) {
				return old, nil
			}
			return nil, err
		}
		now := r.now()
		nm.Name, nm.Project, nm.UID, nm.CreatedAt, nm.UpdatedAt = old.Name, old.Project, old.UID, old.CreatedAt, now
		ops := []store.Op{store.Put(key, encodeMigration(&nm))}
		if nm.Phase != old.Phase {
			if nm.Phase.Final() && nm.FinishedAt == nil {
				nm.FinishedAt = &now
				ops[0] = store.Put(key, encodeMigration(&nm))
			}
			ops = append(ops, migrationEvent(&nm, old.Phase, now))
		}
		ok, rev, err := r.txn(ctx, append([]store.Cond{store.IfRev(key, old.Revision)}, extra...), ops)
		if err != nil {
			return nil, err
		}
		if ok {
			nm.Revision = rev
			return &nm, nil
		}
	}
	return nil, fmt.Errorf("%w: migration %s", ErrContention, id)
}

// holdVM is the stand-in that a migration's capacity hold counts on the
// target: the VM's key with the spec the migration began with, on host.
func holdVM(m *model.Migration, host string) *model.VM {
	return &model.VM{Meta: model.Meta{Name: m.VM, Project: m.Project}, Spec: m.Spec, Status: model.VMStatus{Host: host}}
}

// Fit decides whether a VM may take its place on a target allocation
// (read just now, the VM not yet added): it returns an error to refuse,
// or the extra guards its answer depends on (e.g. the policy's revision),
// which join the transaction. The controllers pass their gate's check.
type Fit func(vm *model.VM, target *model.Allocation) ([]store.Cond, error)

// HoldTarget reserves the migration's VM on the target's allocation (so
// that no placement fills the room while memory moves) and records
// HoldTarget on the migration, in one transaction guarded on both. fit is
// called with the migration's VM (its spec when the migration began, on
// the source) and the target's allocation before the hold is added; it
// may refuse, and its error is returned unchanged. A hold already taken
// is left as it is.
func (r *Repo) HoldTarget(ctx context.Context, id string, fit Fit, extra ...store.Cond) (*model.Migration, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		m, err := r.GetMigration(ctx, id)
		if err != nil {
			return nil, err
		}
		if m.HoldTarget || m.Phase.Final() {
			return m, nil
		}
		a, err := r.GetAllocation(ctx, m.Target)
		if err != nil {
			return nil, err
		}
		conds := append([]store.Cond{store.IfRev(store.MigrationKey(id), m.Revision), store.IfRev(store.AllocKey(m.Target), a.Revision)}, extra...)
		if !a.VMs[m.VMKey()] {
			if fit != nil {
				more, err := fit(holdVM(m, m.Source), a)
				if err != nil {
					return nil, err
				}
				conds = append(conds, more...)
			}
			AllocAdd(a, holdVM(m, m.Source))
		}
		now := r.now()
		a.Host, a.UpdatedAt = m.Target, now
		m.HoldTarget, m.UpdatedAt = true, now
		ok, rev, err := r.txn(ctx, conds, []store.Op{store.Put(store.MigrationKey(id), encodeMigration(m)), store.Put(store.AllocKey(m.Target), encode(a))})
		if err != nil {
			return nil, err
		}
		if ok {
			m.Revision = rev
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: hold for migration %s", ErrContention, id)
}

// CreateHeldMigration is CreateMigration with the capacity hold on the
// target taken in the same transaction (HoldTarget set): fit is called
// with the VM as read and the target's allocation, and may refuse. The
// controllers start the migrations they decide (balancer, drains) with it.
func (r *Repo) CreateHeldMigration(ctx context.Context, m *model.Migration, fit Fit) (*model.Migration, error) {
	c := *m
	if c.Name == "" {
		c.Name = NewID()[:16]
	}
	now := r.now()
	c.CreatedAt, c.UpdatedAt, c.Phase, c.UID, c.HoldTarget = now, now, model.MigrationPending, NewID(), true
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		vm, err := r.GetVM(ctx, c.Project, c.VM)
		if err != nil {
			return nil, err
		}
		if err := migratable(vm, c.Source); err != nil {
			return nil, err
		}
		a, err := r.GetAllocation(ctx, c.Target)
		if err != nil {
			return nil, err
		}
		conds := []store.Cond{store.IfAbsent(store.MigrationKey(c.Name)), store.IfRev(store.VMKey(c.Project, c.VM), vm.Revision),
			store.IfRev(store.AllocKey(c.Target), a.Revision)}
		if fit != nil {
			more, err := fit(vm, a)
			if err != nil {
				return nil, err
			}
			conds = append(conds, more...)
		}
		AllocAdd(a, holdVM(&c, c.Source))
		a.Host, a.UpdatedAt = c.Target, now
		vm.Status.Migration, vm.UpdatedAt = c.Name, now
		ops := []store.Op{
			store.Put(store.MigrationKey(c.Name), encodeMigration(&c)),
			store.Put(store.VMKey(c.Project, c.VM), encodeVM(vm)),
			store.Put(store.AllocKey(c.Target), encode(a)),
			migrationEvent(&c, "", now),
		}
		ok, rev, err := r.txn(ctx, conds, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			c.Revision = rev
			return &c, nil
		}
	}
	return nil, fmt.Errorf("%w: migration of %s/%s", ErrContention, c.Project, c.VM)
}

// migratable says why vm cannot start a migration from source, or nil.
func migratable(vm *model.VM, source string) error {
	switch {
	case vm.Status.Migration != "":
		return fmt.Errorf("%w: VM %s has migration %s under way", ErrMigrating, vm.Key(), vm.Status.Migration)
	case vm.DeletedAt != nil:
		return fmt.Errorf("%w: VM %s is being deleted", ErrMoved, vm.Key())
	case vm.Status.Host != source:
		return fmt.Errorf("%w: VM %s is on %q, not %q", ErrMoved, vm.Key(), vm.Status.Host, source)
	}
	return nil
}

// FinishMigration ends a migration that did not move its VM: phase
// (failed or cancelled) and reason are written, the VM's migration mark
// is cleared (with note as its status message when note is set) and the
// target's capacity hold released — all in one transaction. A migration
// already final is returned as it is.
func (r *Repo) FinishMigration(ctx context.Context, id string, phase model.MigrationPhase, reason, note string, extra ...store.Cond) (*model.Migration, error) {
	if phase != model.MigrationFailed && phase != model.MigrationCancelled {
		return nil, fmt.Errorf("state: FinishMigration to %q: only failed or cancelled", phase)
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		m, err := r.GetMigration(ctx, id)
		if err != nil {
			return nil, err
		}
		if m.Phase.Final() {
			return m, nil
		}
		now := r.now()
		from := m.Phase
		m.Phase, m.Reason, m.FinishedAt, m.UpdatedAt = phase, reason, &now, now
		conds := append([]store.Cond{store.IfRev(store.MigrationKey(id), m.Revision)}, extra...)
		ops := []store.Op{migrationEvent(m, from, now)}
		vm, err := r.GetVM(ctx, m.Project, m.VM)
		switch {
		case errors.Is(err, store.ErrNotFound):
			conds = append(conds, store.IfAbsent(store.VMKey(m.Project, m.VM)))
		case err != nil:
			return nil, err
		case vm.Status.Migration == id:
			vm.Status.Migration = ""
			if note != "" {
				vm.Status.Message = note
			}
			vm.UpdatedAt = now
			conds = append(conds, store.IfRev(store.VMKey(m.Project, m.VM), vm.Revision))
			ops = append(ops, store.Put(store.VMKey(m.Project, m.VM), encodeVM(vm)))
		}
		if m.HoldTarget && (vm == nil || vm.Status.Host != m.Target) {
			a, err := r.GetAllocation(ctx, m.Target)
			if err != nil {
				return nil, err
			}
			if a.VMs[m.VMKey()] {
				AllocRelease(a, holdVM(m, m.Target))
				a.Host, a.UpdatedAt = m.Target, now
				conds = append(conds, store.IfRev(store.AllocKey(m.Target), a.Revision))
				ops = append(ops, store.Put(store.AllocKey(m.Target), encode(a)))
			}
		}
		m.HoldTarget = false
		ops = append(ops, store.Put(store.MigrationKey(id), encodeMigration(m)))
		ok, rev, err := r.txn(ctx, conds, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			m.Revision = rev
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: finishing migration %s", ErrContention, id)
}

// SwitchOver makes the target the VM's host, in one transaction: the VM
// (still marked with this migration and still on the source) gets
// Status.Host = target and loses its mark; the source's allocation
// releases it; the target's allocation trades the capacity hold for the
// VM as it is now; the migration completes with result. ErrMoved when
// the VM is not where the migration expects it.
func (r *Repo) SwitchOver(ctx context.Context, id string, result *model.MigrationResult, extra ...store.Cond) (*model.Migration, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		m, err := r.GetMigration(ctx, id)
		if err != nil {
			return nil, err
		}
		if m.Phase == model.MigrationCompleted {
			return m, nil
		}
		if m.Phase.Final() {
			return nil, fmt.Errorf("state: switch over migration %s: it is %s", id, m.Phase)
		}
		vm, err := r.GetVM(ctx, m.Project, m.VM)
		if err != nil {
			return nil, err
		}
		if vm.Status.Migration != id || vm.Status.Host != m.Source {
			return nil, fmt.Errorf("%w: VM %s is on %q with migration mark %q", ErrMoved, vm.Key(), vm.Status.Host, vm.Status.Migration)
		}
		src, err := r.GetAllocation(ctx, m.Source)
		if err != nil {
			return nil, err
		}
		dst, err := r.GetAllocation(ctx, m.Target)
		if err != nil {
			return nil, err
		}
		now := r.now()
		AllocRelease(src, vm)
		if dst.VMs[m.VMKey()] {
			AllocRelease(dst, holdVM(m, m.Target))
		}
		AllocAdd(dst, vm)
		src.Host, src.UpdatedAt, dst.Host, dst.UpdatedAt = m.Source, now, m.Target, now
		old := *vm
		vm.Status.Host, vm.Status.Migration, vm.UpdatedAt = m.Target, "", now
		vm.Status.Message = fmt.Sprintf("moved from %s by migration %s", m.Source, id)
		followOwner(&old, vm)
		if vm.Spec.Placement.Host != "" {
			// A pinned VM moves only to a host an operator named (the
			// pre-check): the pin follows it.
			vm.Spec.Placement.Host = m.Target
		}
		from := m.Phase
		m.Phase, m.Result, m.FinishedAt, m.UpdatedAt, m.HoldTarget = model.MigrationCompleted, result, &now, now, false
		if m.Result == nil {
			m.Result = &model.MigrationResult{}
		}
		m.Result.WallMs = now.Sub(m.CreatedAt).Milliseconds()
		conds := append([]store.Cond{
			store.IfRev(store.MigrationKey(id), m.Revision), store.IfRev(store.VMKey(m.Project, m.VM), old.Revision),
			store.IfRev(store.AllocKey(m.Source), src.Revision), store.IfRev(store.AllocKey(m.Target), dst.Revision),
		}, extra...)
		ops := []store.Op{
			store.Put(store.MigrationKey(id), encodeMigration(m)),
			store.Put(store.VMKey(m.Project, m.VM), encodeVM(vm)),
			store.Put(store.AllocKey(m.Source), encode(src)),
			store.Put(store.AllocKey(m.Target), encode(dst)),
			migrationEvent(m, from, now),
			EventOp(model.Event{Time: now, Kind: EventVMMoved, Object: VMObject(m.Project, m.VM), Project: m.Project,
				From: m.Source, To: m.Target, Message: fmt.Sprintf("VM %s moved %s → %s (%s)", m.VM, m.Source, m.Target, m.Mode)}),
		}
		ok, rev, err := r.txn(ctx, conds, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			m.Revision = rev
			return m, nil
		}
	}
	return nil, fmt.Errorf("%w: switching over migration %s", ErrContention, id)
}

// MigrationInvolves reports whether host takes part in m (source or target).
func MigrationInvolves(m *model.Migration, host string) bool {
	return m.Source == host || m.Target == host
}

// ParseVMKey splits "project/name".
func ParseVMKey(key string) (project, name string, ok bool) {
	return strings.Cut(key, "/")
}
