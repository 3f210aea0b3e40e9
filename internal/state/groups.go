package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// GroupObject is the Event.Object of a scaling group.
func GroupObject(project, name string) string { return "group/" + project + "/" + name }

// DecodeGroup decodes a stored scaling group with its revision.
func DecodeGroup(kv store.KV) (*model.ScalingGroup, error) {
	g := &model.ScalingGroup{}
	if err := decode(kv, g); err != nil {
		return nil, err
	}
	g.Revision = kv.ModRev
	return g, nil
}

// GetGroup returns one scaling group (ErrNotFound when absent).
func (r *Repo) GetGroup(ctx context.Context, project, name string) (*model.ScalingGroup, error) {
	kv, err := r.st.Get(ctx, store.GroupKey(project, name))
	if err != nil {
		return nil, fmt.Errorf("state: scaling group %s/%s: %w", project, name, err)
	}
	return DecodeGroup(kv)
}

// ListGroups returns the scaling groups of a project ("" = all), by key.
func (r *Repo) ListGroups(ctx context.Context, project string) ([]*model.ScalingGroup, error) {
	out, _, err := listObj(ctx, r, projectPrefix(store.GroupsPrefix, project), func(v *model.ScalingGroup, rev int64) { v.Revision = rev })
	return out, err
}

// CreateGroup stores a validated scaling group, guarded on the project
// and the key's absence. Its members come from the group controller.
func (r *Repo) CreateGroup(ctx context.Context, g *model.ScalingGroup) (*model.ScalingGroup, error) {
	c := *g
	now := r.now()
	c.UID, c.CreatedAt, c.UpdatedAt, c.Revision, c.DeletedAt = NewID(), now, now, 0, nil
	c.Status = model.GroupStatus{Desired: c.Spec.Min, Next: 1}
	p, err := r.GetProject(ctx, c.Project)
	if err != nil {
		return nil, err
	}
	key := store.GroupKey(c.Project, c.Name)
	ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(store.ProjectKey(c.Project), p.Revision), store.IfAbsent(key)},
		[]store.Op{store.Put(key, encodeRevless(&c.Meta, &c)), EventOp(model.Event{Time: now, Kind: "group.created",
			Object: GroupObject(c.Project, c.Name), Project: c.Project,
			Message: fmt.Sprintf("scaling group %s created: %d to %d members", c.Name, c.Spec.Min, c.Spec.Max)})})
	if err != nil {
		return nil, err
	}
	if !ok {
		if _, err := r.st.Get(ctx, key); err == nil {
			return nil, fmt.Errorf("%w: scaling group %s/%s", ErrExists, c.Project, c.Name)
		}
		return nil, fmt.Errorf("%w: creating scaling group %s/%s", ErrContention, c.Project, c.Name)
	}
	c.Revision = rev
	return &c, nil
}

// UpdateGroup applies fn to a group and writes it with compare-and-swap,
// retrying (and calling fn again) on conflict; the events fn returns are
// written in the same transaction. fn may return ErrSkip to write nothing.
func (r *Repo) UpdateGroup(ctx context.Context, project, name string, fn func(*model.ScalingGroup) ([]model.Event, error)) (*model.ScalingGroup, error) {
	key := store.GroupKey(project, name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		g, err := r.GetGroup(ctx, project, name)
		if err != nil {
			return nil, err
		}
		old := *g
		evs, err := fn(g)
		if errors.Is(err, ErrSkip) {
			return &old, nil
		}
		if err != nil {
			return nil, err
		}
		g.Name, g.Project, g.UID, g.CreatedAt = old.Name, old.Project, old.UID, old.CreatedAt
		g.UpdatedAt = r.now()
		ops := []store.Op{store.Put(key, encodeRevless(&g.Meta, g))}
		for _, e := range evs {
			e.Project, e.Object = project, GroupObject(project, name)
			if e.Time.IsZero() {
				e.Time = g.UpdatedAt
			}
			ops = append(ops, EventOp(e))
		}
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(key, g.Revision)}, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			g.Revision = rev
			return g, nil
		}
	}
	return nil, fmt.Errorf("%w: scaling group %s/%s", ErrContention, project, name)
}

// FinishDeleteGroup removes a group record whose members are gone.
func (r *Repo) FinishDeleteGroup(ctx context.Context, g *model.ScalingGroup) error {
	key := store.GroupKey(g.Project, g.Name)
	ok, _, err := r.txn(ctx, []store.Cond{store.IfRev(key, g.Revision)}, []store.Op{store.Delete(key),
		EventOp(model.Event{Time: r.now(), Kind: "group.deleted", Object: GroupObject(g.Project, g.Name), Project: g.Project,
			Message: "scaling group " + g.Name + " deleted"})})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: deleting scaling group %s/%s", ErrContention, g.Project, g.Name)
	}
	return nil
}
