package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

func decodeProject(kv store.KV) (*model.Project, error) {
	p := &model.Project{}
	if err := decode(kv, p); err != nil {
		return nil, err
	}
	p.Revision = kv.ModRev
	return p, nil
}

// GetProject returns a project (ErrNotFound when absent).
func (r *Repo) GetProject(ctx context.Context, name string) (*model.Project, error) {
	kv, err := r.st.Get(ctx, store.ProjectKey(name))
	if err != nil {
		return nil, fmt.Errorf("state: project %s: %w", name, err)
	}
	return decodeProject(kv)
}

// GetUsage returns a project's usage and the revision of its key (0 when
// none is stored: all zero).
func (r *Repo) GetUsage(ctx context.Context, project string) (model.Usage, int64, error) {
	var u model.Usage
	rev, err := r.get(ctx, store.UsageKey(project), &u, true)
	return u, rev, err
}

// ListProjects returns every project in name order.
func (r *Repo) ListProjects(ctx context.Context) ([]*model.Project, error) {
	kvs, _, err := r.st.List(ctx, store.ProjectsPrefix)
	if err != nil {
		return nil, fmt.Errorf("state: list projects: %w", err)
	}
	out := make([]*model.Project, 0, len(kvs))
	for _, kv := range kvs {
		p, err := decodeProject(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ListUsage returns every project's usage by project name.
func (r *Repo) ListUsage(ctx context.Context) (map[string]model.Usage, error) {
	kvs, _, err := r.st.List(ctx, store.UsagePrefix)
	if err != nil {
		return nil, fmt.Errorf("state: list usage: %w", err)
	}
	out := make(map[string]model.Usage, len(kvs))
	for _, kv := range kvs {
		var u model.Usage
		if err := decode(kv, &u); err != nil {
			return nil, err
		}
		out[kv.Key[len(store.UsagePrefix):]] = u
	}
	return out, nil
}

// CreateProject stores a new project and its zero usage. The caller
// validates it. ErrExists when the name is taken.
func (r *Repo) CreateProject(ctx context.Context, p *model.Project) (*model.Project, error) {
	now := r.now()
	cp := *p
	cp.Project, cp.Revision, cp.DeletedAt = "", 0, nil
	if cp.UID == "" {
		cp.UID = NewID()
	}
	cp.CreatedAt, cp.UpdatedAt = now, now
	key := store.ProjectKey(cp.Name)
	ok, rev, err := r.txn(ctx, []store.Cond{store.IfAbsent(key)}, []store.Op{
		store.Put(key, encode(&cp)),
		store.Put(store.UsageKey(cp.Name), encode(model.Usage{})),
		EventOp(model.Event{Time: now, Kind: "project.created", Object: "project/" + cp.Name, Project: cp.Name, Message: "project " + cp.Name + " created"}),
	})
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: project %s", ErrExists, cp.Name)
	}
	cp.Revision = rev
	return &cp, nil
}

// EnsureProject creates the project if it does not exist (used for the
// default project at first start).
func (r *Repo) EnsureProject(ctx context.Context, p *model.Project) error {
	_, err := r.CreateProject(ctx, p)
	if errors.Is(err, ErrExists) {
		return nil
	}
	return err
}

// UpdateProject applies fn to a project with compare-and-swap. The name
// cannot change.
func (r *Repo) UpdateProject(ctx context.Context, name string, fn func(*model.Project) error) (*model.Project, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		p, err := r.GetProject(ctx, name)
		if err != nil {
			return nil, err
		}
		old := p.Revision
		if err := fn(p); err != nil {
			if errors.Is(err, ErrSkip) {
				return p, nil
			}
			return nil, err
		}
		p.Name, p.Revision = name, 0
		p.UpdatedAt = r.now()
		key := store.ProjectKey(name)
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(key, old)}, []store.Op{store.Put(key, encode(p))})
		if err != nil {
			return nil, err
		}
		if ok {
			p.Revision = rev
			return p, nil
		}
	}
	return nil, fmt.Errorf("%w: project %s", ErrContention, name)
}

// DeleteProject deletes an empty project and its usage key. ErrNotEmpty
// when it still holds VMs (a create racing the delete makes the guard on
// the usage key fail, so no VM is ever orphaned).
func (r *Repo) DeleteProject(ctx context.Context, name string) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
		p, err := r.GetProject(ctx, name)
		if err != nil {
			return err
		}
		u, urev, err := r.GetUsage(ctx, name)
		if err != nil {
			return err
		}
		kvs, _, err := r.st.List(ctx, store.VMProjectPrefix(name))
		if err != nil {
			return fmt.Errorf("state: delete project %s: %w", name, err)
		}
		if u.VMs > 0 || len(kvs) > 0 {
			return fmt.Errorf("%w: project %s holds %d VMs; delete them first", ErrNotEmpty, name, max(u.VMs, len(kvs)))
		}
		ok, _, err := r.txn(ctx,
			[]store.Cond{store.IfRev(store.ProjectKey(name), p.Revision), store.IfRev(store.UsageKey(name), urev)},
			[]store.Op{store.Delete(store.ProjectKey(name)), store.Delete(store.UsageKey(name)),
				EventOp(model.Event{Time: r.now(), Kind: "project.deleted", Object: "project/" + name, Project: name, Message: "project " + name + " deleted"})})
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("%w: project %s", ErrContention, name)
}
