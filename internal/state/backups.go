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

// Backup objects (docs/backup.md): repositories, policies, backups,
// restores and repository tasks. Each is one JSON key; writers use the
// compare-and-swap helpers below, and every phase change writes an event
// in the same transaction.

// ErrBackupBusy says a VM already has a backup in flight.
var ErrBackupBusy = errors.New("state: a backup of this VM is in flight")

func getObj[T any](ctx context.Context, r *Repo, key string, setRev func(*T, int64)) (*T, error) {
	kv, err := r.st.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("state: %s: %w", strings.TrimPrefix(key, store.Root), err)
	}
	v := new(T)
	if err := decode(kv, v); err != nil {
		return nil, err
	}
	setRev(v, kv.ModRev)
	return v, nil
}

// projectPrefix narrows a per-project prefix to one project ("" = all).
func projectPrefix(prefix, project string) string {
	if project == "" {
		return prefix
	}
	return prefix + project + "/"
}

func listObj[T any](ctx context.Context, r *Repo, prefix string, setRev func(*T, int64)) ([]*T, int64, error) {
	kvs, rev, err := r.st.List(ctx, prefix)
	if err != nil {
		return nil, 0, fmt.Errorf("state: list %s: %w", strings.TrimPrefix(prefix, store.Root), err)
	}
	out := make([]*T, 0, len(kvs))
	for _, kv := range kvs {
		v := new(T)
		if err := decode(kv, v); err != nil {
			return nil, 0, err
		}
		setRev(v, kv.ModRev)
		out = append(out, v)
	}
	return out, rev, nil
}

// updateObj applies fn with compare-and-swap, retrying on conflict; fn
// may return ErrSkip. event, when it returns a non-empty Kind, is written
// in the same transaction.
func updateObj[T any](ctx context.Context, r *Repo, key string, setRev func(*T, int64), fn func(*T) error,
	event func(old, nv *T) model.Event) (*T, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		kv, err := r.st.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("state: %s: %w", strings.TrimPrefix(key, store.Root), err)
		}
		old, nv := new(T), new(T)
		if err := decode(kv, old); err != nil {
			return nil, err
		}
		decode(kv, nv)
		setRev(old, kv.ModRev)
		if err := fn(nv); err != nil {
			if errors.Is(err, ErrSkip) {
				return old, nil
			}
			return nil, err
		}
		setRev(nv, 0)
		ops := []store.Op{store.Put(key, encode(nv))}
		if event != nil {
			if e := event(old, nv); e.Kind != "" {
				e.Time = r.now()
				ops = append(ops, EventOp(e))
			}
		}
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(key, kv.ModRev)}, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			setRev(nv, rev)
			return nv, nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrContention, strings.TrimPrefix(key, store.Root))
}

func createObj(ctx context.Context, r *Repo, key string, v any, conds []store.Cond, ev model.Event) (int64, error) {
	ops := []store.Op{store.Put(key, encode(v))}
	if ev.Kind != "" {
		ev.Time = r.now()
		ops = append(ops, EventOp(ev))
	}
	ok, rev, err := r.txn(ctx, append([]store.Cond{store.IfAbsent(key)}, conds...), ops)
	if err != nil {
		return 0, err
	}
	if !ok {
		if _, err := r.st.Get(ctx, key); err == nil {
			return 0, fmt.Errorf("%w: %s", ErrExists, strings.TrimPrefix(key, store.Root))
		}
		return 0, fmt.Errorf("%w: %s changed; try again", ErrContention, strings.TrimPrefix(key, store.Root))
	}
	return rev, nil
}

func setMetaRev(m *model.Meta, rev int64) { m.Revision = rev }

// --- repositories ---

func repoRev(v *model.BackupRepo, rev int64) { setMetaRev(&v.Meta, rev) }

// GetBackupRepo returns a repository record.
func (r *Repo) GetBackupRepo(ctx context.Context, name string) (*model.BackupRepo, error) {
	return getObj(ctx, r, store.BackupRepoKey(name), repoRev)
}

// ListBackupRepos returns every repository record.
func (r *Repo) ListBackupRepos(ctx context.Context) ([]*model.BackupRepo, error) {
	out, _, err := listObj(ctx, r, store.BackupReposPrefix, repoRev)
	return out, err
}

// CreateBackupRepo stores a repository record (ErrExists when the name is taken).
func (r *Repo) CreateBackupRepo(ctx context.Context, b *model.BackupRepo) (*model.BackupRepo, error) {
	now := r.now()
	b.UID, b.CreatedAt, b.UpdatedAt, b.Project = NewID(), now, now, ""
	b.Revision = 0
	rev, err := createObj(ctx, r, store.BackupRepoKey(b.Name), b, nil,
		model.Event{Kind: "backup.repo.created", Object: "backup-repo/" + b.Name, Message: "backup repository " + b.Name + " registered"})
	if err != nil {
		return nil, err
	}
	b.Revision = rev
	return b, nil
}

// DeleteBackupRepo forgets a repository (its data stays where it is).
func (r *Repo) DeleteBackupRepo(ctx context.Context, name string) error {
	_, _, err := r.txn(ctx, nil, []store.Op{store.Delete(store.BackupRepoKey(name))})
	return err
}

// --- policies ---

// GetBackupPolicy returns a project's policy (store.ClusterPolicyName: the
// cluster's); ErrNotFound when none is set.
func (r *Repo) GetBackupPolicy(ctx context.Context, project string) (*model.BackupPolicy, error) {
	return getObj(ctx, r, store.BackupPolicyKey(project), func(*model.BackupPolicy, int64) {})
}

// SetBackupPolicy stores (or with nil, removes) a policy.
func (r *Repo) SetBackupPolicy(ctx context.Context, project string, p *model.BackupPolicy) error {
	op := store.Delete(store.BackupPolicyKey(project))
	if p != nil {
		op = store.Put(store.BackupPolicyKey(project), encode(p))
	}
	_, _, err := r.txn(ctx, nil, []store.Op{op, EventOp(model.Event{Time: r.now(), Kind: "backup.policy", Object: "backup-policy/" + project,
		Project: strings.TrimPrefix(project, store.ClusterPolicyName), Message: "backup policy of " + project + " changed"})})
	return err
}

// EffectivePolicy is the project's policy, else the cluster's, else nil.
func (r *Repo) EffectivePolicy(ctx context.Context, project string) (*model.BackupPolicy, error) {
	for _, name := range []string{project, store.ClusterPolicyName} {
		p, err := r.GetBackupPolicy(ctx, name)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	return nil, nil
}

// --- backups ---

func backupRev(v *model.Backup, rev int64) { setMetaRev(&v.Meta, rev) }

// BackupObject is the Event.Object of a backup.
func BackupObject(project, name string) string { return "backup/" + project + "/" + name }

// GetBackup returns one backup.
func (r *Repo) GetBackup(ctx context.Context, project, name string) (*model.Backup, error) {
	return getObj(ctx, r, store.BackupKey(project, name), backupRev)
}

// ListBackups returns the backups of a project (all projects when
// empty), oldest first.
func (r *Repo) ListBackups(ctx context.Context, project string) ([]*model.Backup, int64, error) {
	prefix := store.BackupsPrefix
	if project != "" {
		prefix += project + "/"
	}
	out, rev, err := listObj(ctx, r, prefix, backupRev)
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, rev, err
}

// CreateBackup stores a backup request (phase pending) of a VM, guarded
// on the VM's revision; refused with ErrBackupBusy when the VM has one in
// flight (the check and the write are one transaction on the VM key).
func (r *Repo) CreateBackup(ctx context.Context, vm *model.VM, b *model.Backup) (*model.Backup, error) {
	have, _, err := r.ListBackups(ctx, vm.Project)
	if err != nil {
		return nil, err
	}
	for _, o := range have {
		if o.VM == vm.Name && !o.Phase.Final() {
			return nil, fmt.Errorf("%w: %s (%s)", ErrBackupBusy, o.Name, o.Phase)
		}
	}
	now := r.now()
	b.Project, b.VM, b.Host, b.Spec = vm.Project, vm.Name, vm.Status.Host, vm.Spec
	b.UID, b.CreatedAt, b.UpdatedAt, b.Phase, b.Revision = NewID(), now, now, model.BackupPending, 0
	rev, err := createObj(ctx, r, store.BackupKey(vm.Project, b.Name), b,
		[]store.Cond{store.IfRev(store.VMKey(vm.Project, vm.Name), vm.Revision)},
		model.Event{Kind: "backup.pending", Object: BackupObject(vm.Project, b.Name), Project: vm.Project,
			Message: fmt.Sprintf("backup %s of %s to %s requested", b.Name, vm.Name, b.Repo)})
	if err != nil {
		return nil, err
	}
	b.Revision = rev
	return b, nil
}

// NewOpID returns a backup (or restore, task) id: time-ordered, a valid
// repository index name and driver checkpoint.
func NewOpID(prefix string, now time.Time) string {
	return prefix + "-" + now.UTC().Format("20060102t150405") + "-" + shortID()[:6]
}

// LastCompleted is the newest completed backup of vm in repoName.
func LastCompleted(bs []*model.Backup, vm, repoName string) *model.Backup {
	var last *model.Backup
	for _, b := range bs {
		if b.VM != vm || b.Repo != repoName || b.Phase != model.BackupCompleted || b.FinishedAt == nil {
			continue
		}
		if last == nil || b.FinishedAt.After(*last.FinishedAt) {
			last = b
		}
	}
	return last
}

// RequestBackup stores a backup request of vm into repoName, read
// incrementally against the VM's last completed backup there: the API's
// and the schedules' way in.
func (r *Repo) RequestBackup(ctx context.Context, vm *model.VM, repoName string, scheduled bool, limits ...model.BackupLimits) (*model.Backup, error) {
	bs, _, err := r.ListBackups(ctx, vm.Project)
	if err != nil {
		return nil, err
	}
	b := &model.Backup{Meta: model.Meta{Name: NewOpID("b", r.now())}, Repo: repoName, Scheduled: scheduled}
	if len(limits) > 0 {
		b.Limits = limits[0]
	}
	if last := LastCompleted(bs, vm.Name, repoName); last != nil {
		b.Parent = last.Name
	}
	return r.CreateBackup(ctx, vm, b)
}

// UpdateBackup applies fn with compare-and-swap; a phase change writes an
// event.
func (r *Repo) UpdateBackup(ctx context.Context, project, name string, fn func(*model.Backup) error) (*model.Backup, error) {
	return updateObj(ctx, r, store.BackupKey(project, name), backupRev, func(b *model.Backup) error {
		if err := fn(b); err != nil {
			return err
		}
		b.UpdatedAt = r.now()
		return nil
	}, func(old, nv *model.Backup) model.Event {
		if old.Phase == nv.Phase {
			return model.Event{}
		}
		msg := fmt.Sprintf("backup %s of %s %s", nv.Name, nv.VM, nv.Phase)
		if nv.Error != "" {
			msg += ": " + nv.Error
		}
		return model.Event{Kind: "backup." + string(nv.Phase), Object: BackupObject(nv.Project, nv.Name), Project: nv.Project,
			Message: msg, From: string(old.Phase), To: string(nv.Phase)}
	})
}

// DeleteBackup removes a backup record (absent is not an error).
func (r *Repo) DeleteBackup(ctx context.Context, project, name string) error {
	_, _, err := r.txn(ctx, nil, []store.Op{store.Delete(store.BackupKey(project, name)),
		EventOp(model.Event{Time: r.now(), Kind: "backup.deleted", Object: BackupObject(project, name), Project: project,
			Message: "backup " + name + " deleted"})})
	return err
}

// --- restores ---

func restoreRev(v *model.Restore, rev int64) { setMetaRev(&v.Meta, rev) }

// GetRestore returns one restore.
func (r *Repo) GetRestore(ctx context.Context, project, name string) (*model.Restore, error) {
	return getObj(ctx, r, store.RestoreKey(project, name), restoreRev)
}

// ListRestores returns the restores of a project (all when empty).
func (r *Repo) ListRestores(ctx context.Context, project string) ([]*model.Restore, int64, error) {
	prefix := store.RestoresPrefix
	if project != "" {
		prefix += project + "/"
	}
	out, rev, err := listObj(ctx, r, prefix, restoreRev)
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, rev, err
}

// CreateRestore stores a restore (phase pending).
func (r *Repo) CreateRestore(ctx context.Context, rs *model.Restore) (*model.Restore, error) {
	now := r.now()
	rs.UID, rs.CreatedAt, rs.UpdatedAt, rs.Revision = NewID(), now, now, 0
	if rs.Phase == "" {
		rs.Phase = model.RestorePending
	}
	rev, err := createObj(ctx, r, store.RestoreKey(rs.Project, rs.Name), rs, nil,
		model.Event{Kind: "restore.pending", Object: "restore/" + rs.Project + "/" + rs.Name, Project: rs.Project,
			Message: fmt.Sprintf("restore of backup %s into %s requested", rs.Backup, rs.VM)})
	if err != nil {
		return nil, err
	}
	rs.Revision = rev
	return rs, nil
}

// UpdateRestore applies fn with compare-and-swap; a phase change writes an
// event.
func (r *Repo) UpdateRestore(ctx context.Context, project, name string, fn func(*model.Restore) error) (*model.Restore, error) {
	return updateObj(ctx, r, store.RestoreKey(project, name), restoreRev, func(rs *model.Restore) error {
		if err := fn(rs); err != nil {
			return err
		}
		rs.UpdatedAt = r.now()
		return nil
	}, func(old, nv *model.Restore) model.Event {
		if old.Phase == nv.Phase {
			return model.Event{}
		}
		msg := fmt.Sprintf("restore %s into %s %s", nv.Name, nv.VM, nv.Phase)
		if nv.Error != "" {
			msg += ": " + nv.Error
		}
		return model.Event{Kind: "restore." + string(nv.Phase), Object: "restore/" + nv.Project + "/" + nv.Name,
			Project: nv.Project, Message: msg, From: string(old.Phase), To: string(nv.Phase)}
	})
}

// --- tasks ---

func taskRev(v *model.BackupTask, rev int64) { setMetaRev(&v.Meta, rev) }

// GetBackupTask returns one repository task.
func (r *Repo) GetBackupTask(ctx context.Context, name string) (*model.BackupTask, error) {
	return getObj(ctx, r, store.BackupTaskKey(name), taskRev)
}

// ListBackupTasks returns every repository task, oldest first.
func (r *Repo) ListBackupTasks(ctx context.Context) ([]*model.BackupTask, error) {
	out, _, err := listObj(ctx, r, store.BackupTasksPrefix, taskRev)
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// CreateBackupTask stores a task (phase pending).
func (r *Repo) CreateBackupTask(ctx context.Context, t *model.BackupTask) (*model.BackupTask, error) {
	now := r.now()
	t.UID, t.CreatedAt, t.UpdatedAt, t.Phase, t.Revision = NewID(), now, now, model.BackupPending, 0
	rev, err := createObj(ctx, r, store.BackupTaskKey(t.Name), t, nil,
		model.Event{Kind: "backup.task.pending", Object: "backup-task/" + t.Name, Message: t.Kind + " of repository " + t.Repo + " requested"})
	if err != nil {
		return nil, err
	}
	t.Revision = rev
	return t, nil
}

// UpdateBackupTask applies fn with compare-and-swap.
func (r *Repo) UpdateBackupTask(ctx context.Context, name string, fn func(*model.BackupTask) error) (*model.BackupTask, error) {
	return updateObj(ctx, r, store.BackupTaskKey(name), taskRev, func(t *model.BackupTask) error {
		if err := fn(t); err != nil {
			return err
		}
		t.UpdatedAt = r.now()
		return nil
	}, func(old, nv *model.BackupTask) model.Event {
		if old.Phase == nv.Phase {
			return model.Event{}
		}
		msg := fmt.Sprintf("%s of repository %s %s", nv.Kind, nv.Repo, nv.Phase)
		if nv.Error != "" {
			msg += ": " + nv.Error
		}
		return model.Event{Kind: "backup.task." + string(nv.Phase), Object: "backup-task/" + nv.Name, Message: msg,
			From: string(old.Phase), To: string(nv.Phase)}
	})
}

// DeleteBackupTask removes a task record.
func (r *Repo) DeleteBackupTask(ctx context.Context, name string) error {
	_, _, err := r.txn(ctx, nil, []store.Op{store.Delete(store.BackupTaskKey(name))})
	return err
}
