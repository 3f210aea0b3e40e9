package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// DecodeSecurityGroup decodes a stored group with its revision.
func DecodeSecurityGroup(kv store.KV) (*model.SecurityGroup, error) {
	g := &model.SecurityGroup{}
	if err := decode(kv, g); err != nil {
		return nil, err
	}
	g.Revision = kv.ModRev
	return g, nil
}

// GetSecurityGroup returns one group (ErrNotFound when absent).
func (r *Repo) GetSecurityGroup(ctx context.Context, project, name string) (*model.SecurityGroup, error) {
	kv, err := r.st.Get(ctx, store.SecGroupKey(project, name))
	if err != nil {
		return nil, fmt.Errorf("state: security group %s/%s: %w", project, name, err)
	}
	return DecodeSecurityGroup(kv)
}

// ListSecurityGroups returns a project's groups ("" = all), by name.
func (r *Repo) ListSecurityGroups(ctx context.Context, project string) ([]*model.SecurityGroup, error) {
	out, _, err := listObj(ctx, r, projectPrefix(store.SecGroupsPrefix, project), func(v *model.SecurityGroup, rev int64) { v.Revision = rev })
	return out, err
}

// CreateSecurityGroup stores a validated group; every rule gets an ID.
func (r *Repo) CreateSecurityGroup(ctx context.Context, g *model.SecurityGroup) (*model.SecurityGroup, error) {
	c := *g
	now := r.now()
	c.UID, c.CreatedAt, c.UpdatedAt, c.Revision, c.DeletedAt = NewID(), now, now, 0, nil
	c.Spec.Rules = append([]model.Rule(nil), g.Spec.Rules...)
	for i := range c.Spec.Rules {
		c.Spec.Rules[i].ID = shortID()
	}
	p, err := r.GetProject(ctx, c.Project)
	if err != nil {
		return nil, err
	}
	key := store.SecGroupKey(c.Project, c.Name)
	ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(store.ProjectKey(c.Project), p.Revision), store.IfAbsent(key)},
		[]store.Op{store.Put(key, encodeRevless(&c.Meta, &c))})
	if err != nil {
		return nil, err
	}
	if !ok {
		if _, err := r.st.Get(ctx, key); err == nil {
			return nil, fmt.Errorf("%w: security group %s/%s", ErrExists, c.Project, c.Name)
		}
		return nil, fmt.Errorf("%w: creating security group %s/%s", ErrContention, c.Project, c.Name)
	}
	c.Revision = rev
	return &c, nil
}

// UpdateSecurityGroup applies fn with compare-and-swap, retrying.
func (r *Repo) UpdateSecurityGroup(ctx context.Context, project, name string, fn func(*model.SecurityGroup) error) (*model.SecurityGroup, error) {
	key := store.SecGroupKey(project, name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		g, err := r.GetSecurityGroup(ctx, project, name)
		if err != nil {
			return nil, err
		}
		if err := fn(g); err != nil {
			return nil, err
		}
		g.UpdatedAt = r.now()
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(key, g.Revision)}, []store.Op{store.Put(key, encodeRevless(&g.Meta, g))})
		if err != nil {
			return nil, err
		}
		if ok {
			g.Revision = rev
			return g, nil
		}
	}
	return nil, fmt.Errorf("%w: security group %s/%s", ErrContention, project, name)
}

// AddRule appends a validated rule with a new ID; the same rule twice
// is refused (ErrExists).
func (r *Repo) AddRule(ctx context.Context, project, group string, rule model.Rule) (*model.SecurityGroup, model.Rule, error) {
	rule.ID = shortID()
	g, err := r.UpdateSecurityGroup(ctx, project, group, func(g *model.SecurityGroup) error {
		if len(g.Spec.Rules) >= model.MaxRules {
			return &model.FieldError{Field: "rules", Message: fmt.Sprintf("group %s has %d rules, the most a group holds", group, model.MaxRules)}
		}
		for _, have := range g.Spec.Rules {
			if have.Same(rule) {
				return fmt.Errorf("%w: group %s already has rule %s (%s)", ErrExists, group, have.ID, have)
			}
		}
		g.Spec.Rules = append(g.Spec.Rules, rule)
		return nil
	})
	return g, rule, err
}

// DeleteRule removes the rule with id (ErrNotFound when absent).
func (r *Repo) DeleteRule(ctx context.Context, project, group, id string) (*model.SecurityGroup, error) {
	return r.UpdateSecurityGroup(ctx, project, group, func(g *model.SecurityGroup) error {
		for i, have := range g.Spec.Rules {
			if have.ID == id {
				g.Spec.Rules = append(g.Spec.Rules[:i:i], g.Spec.Rules[i+1:]...)
				return nil
			}
		}
		return fmt.Errorf("state: group %s has no rule %s: %w", group, id, store.ErrNotFound)
	})
}

// DeleteSecurityGroup deletes a group that no NIC lists and no other
// group's rule names as its peer (ErrInUse says which).
func (r *Repo) DeleteSecurityGroup(ctx context.Context, project, name string) error {
	g, err := r.GetSecurityGroup(ctx, project, name)
	if err != nil {
		return err
	}
	vms, _, err := r.ListVMs(ctx, project)
	if err != nil {
		return err
	}
	var users []string
	for _, v := range vms {
		for _, n := range v.Spec.NICs {
			for _, sg := range n.SecurityGroups {
				if sg == name {
					users = append(users, "VM "+v.Name+" NIC "+n.Name)
				}
			}
		}
	}
	groups, err := r.ListSecurityGroups(ctx, project)
	if err != nil {
		return err
	}
	for _, o := range groups {
		for _, rule := range o.Spec.Rules {
			if rule.Group == name && o.Name != name {
				users = append(users, "a rule of group "+o.Name)
			}
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("%w: security group %s is used by %s", ErrInUse, name, strings.Join(users, ", "))
	}
	ok, _, err := r.txn(ctx, []store.Cond{store.IfRev(store.SecGroupKey(project, name), g.Revision)},
		[]store.Op{store.Delete(store.SecGroupKey(project, name))})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: security group %s changed meanwhile; retry", ErrContention, name)
	}
	return nil
}

// SweepAddresses releases addresses whose owner no longer holds them: a
// VM NIC owner whose VM is gone or no longer has that NIC with that
// address. Only allocations older than grace go (an allocation is made
// just before the VM or NIC that holds it is stored). Owners of other
// kinds (a balancer's VIP) are left to their own API. It returns how
// many it released.
func (r *Repo) SweepAddresses(ctx context.Context, grace time.Duration) (int, error) {
	kvs, _, err := r.st.List(ctx, store.IPAMPrefix)
	if err != nil {
		return 0, fmt.Errorf("state: list addresses: %w", err)
	}
	now := r.now()
	vmCache := map[string]*model.VM{}
	released := 0
	var errs []error
	for _, kv := range kvs {
		var a model.AddressAlloc
		if decode(kv, &a) != nil || now.Sub(a.CreatedAt) < grace || !strings.HasPrefix(a.Owner, "vm/") {
			continue
		}
		rest := strings.TrimPrefix(kv.Key, store.IPAMPrefix)
		project, _, _ := strings.Cut(rest, "/")
		parts := strings.Split(a.Owner, "/")
		if len(parts) != 3 {
			continue
		}
		vmName, nic := parts[1], parts[2]
		vk := project + "/" + vmName
		vm, seen := vmCache[vk]
		if !seen {
			vm, err = r.GetVM(ctx, project, vmName)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				errs = append(errs, err)
				continue
			}
			vmCache[vk] = vm
		}
		if vm != nil && holds(vm, nic, a) {
			continue
		}
		ok, _, err := r.txn(ctx, []store.Cond{store.IfRev(kv.Key, kv.ModRev)}, []store.Op{store.Delete(kv.Key)})
		if err != nil {
			errs = append(errs, err)
		} else if ok {
			released++
		}
	}
	return released, errors.Join(errs...)
}

func holds(vm *model.VM, nic string, a model.AddressAlloc) bool {
	for _, n := range vm.Spec.NICs {
		if n.Name == nic && n.Network == a.Network && n.IP == a.IP {
			return true
		}
	}
	return false
}
