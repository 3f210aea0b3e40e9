package state

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// LBObject is the Event.Object of a load balancer.
func LBObject(project, name string) string { return "lb/" + project + "/" + name }

// DecodeLB decodes a stored load balancer with its revision.
func DecodeLB(kv store.KV) (*model.LoadBalancer, error) {
	b := &model.LoadBalancer{}
	if err := decode(kv, b); err != nil {
		return nil, err
	}
	b.Revision = kv.ModRev
	return b, nil
}

// GetLB returns one load balancer (ErrNotFound when absent).
func (r *Repo) GetLB(ctx context.Context, project, name string) (*model.LoadBalancer, error) {
	kv, err := r.st.Get(ctx, store.LBKey(project, name))
	if err != nil {
		return nil, fmt.Errorf("state: load balancer %s/%s: %w", project, name, err)
	}
	return DecodeLB(kv)
}

// ListLBs returns the load balancers of a project ("" = all), by key.
func (r *Repo) ListLBs(ctx context.Context, project string) ([]*model.LoadBalancer, error) {
	out, _, err := listObj(ctx, r, projectPrefix(store.LBsPrefix, project), func(v *model.LoadBalancer, rev int64) { v.Revision = rev })
	return out, err
}

// CreateLB stores a validated balancer in phase pending together with
// its virtual IP, in one transaction guarded on the project, the
// network (unchanged, so not being deleted), the balancer key's and the
// address key's absence: no address is ever left without its balancer.
// The address is spec.ip when given (ErrAddressTaken when another owner
// has it), else a free one (ErrPoolFull). The MAC is mac.
func (r *Repo) CreateLB(ctx context.Context, b *model.LoadBalancer, mac string) (*model.LoadBalancer, error) {
	c := *b
	now := r.now()
	c.UID, c.CreatedAt, c.UpdatedAt, c.Revision, c.DeletedAt = NewID(), now, now, 0, nil
	owner := model.LBOwner(c.Name)
	key := store.LBKey(c.Project, c.Name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		p, err := r.GetProject(ctx, c.Project)
		if err != nil {
			return nil, err
		}
		if _, err := r.st.Get(ctx, key); err == nil {
			return nil, fmt.Errorf("%w: load balancer %s/%s", ErrExists, c.Project, c.Name)
		}
		n, ip, err := r.pickAddress(ctx, c.Project, c.Spec.Network, owner, c.Spec.IP)
		if err != nil {
			return nil, err
		}
		c.Status = model.LBStatus{Phase: model.LBPending, VIP: ip.String(), MAC: mac}
		addr := model.AddressAlloc{Network: n.Name, IP: ip.String(), Owner: owner, MAC: mac, CreatedAt: now}
		akey := store.AddressKey(c.Project, n.Name, addr.IP)
		conds := []store.Cond{store.IfRev(store.ProjectKey(c.Project), p.Revision), store.IfRev(store.NetworkKey(c.Project, n.Name), n.Revision),
			store.IfAbsent(key), store.IfAbsent(akey)}
		ops := []store.Op{store.Put(key, encodeRevless(&c.Meta, &c)), store.Put(akey, encode(addr)),
			EventOp(model.Event{Time: now, Kind: "lb.created", Object: LBObject(c.Project, c.Name), Project: c.Project,
				Message: fmt.Sprintf("load balancer %s created: %s:%d on network %s (%s)", c.Name, addr.IP, c.Spec.Listen, n.Name, c.Spec.Algorithm)})}
		ok, rev, err := r.txn(ctx, conds, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			c.Revision = rev
			return &c, nil
		}
	}
	return nil, fmt.Errorf("%w: creating load balancer %s/%s", ErrContention, c.Project, c.Name)
}

// pickAddress chooses an address of a network for owner: fixed when
// given, else a free one. It does not store it.
func (r *Repo) pickAddress(ctx context.Context, project, network, owner, fixed string) (*model.Network, netip.Addr, error) {
	n, err := r.GetNetwork(ctx, project, network)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	if n.DeletedAt != nil {
		return nil, netip.Addr{}, fmt.Errorf("%w: network %s is being deleted", ErrInUse, network)
	}
	used, err := r.ListAddresses(ctx, project, network)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	taken := make(map[netip.Addr]string, len(used))
	for _, a := range used {
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			taken[ip] = a.Owner
		}
	}
	pfx := n.Spec.Prefix()
	gw, _ := netip.ParseAddr(n.Spec.Gateway)
	if fixed == "" {
		ip := pickFree(pfx, gw, taken)
		if !ip.IsValid() {
			return nil, ip, fmt.Errorf("%w: network %s (%s) has no free address", ErrPoolFull, network, pfx)
		}
		return n, ip, nil
	}
	if err := model.ValidHostAddress("spec.ip", pfx, fixed); err != nil {
		return nil, netip.Addr{}, err
	}
	ip := netip.MustParseAddr(fixed)
	if ip == gw {
		return nil, ip, &model.FieldError{Field: "spec.ip", Message: fmt.Sprintf("%s is the gateway of network %s", fixed, network)}
	}
	if o, ok := taken[ip]; ok && o != owner {
		return nil, ip, fmt.Errorf("%w: %s on network %s is used by %s", ErrAddressTaken, fixed, network, o)
	}
	return n, ip, nil
}

// UpdateLB applies fn to a balancer and writes it with compare-and-swap,
// retrying (and calling fn again) on conflict; the events fn returns are
// written in the same transaction. fn may return ErrSkip to write nothing.
func (r *Repo) UpdateLB(ctx context.Context, project, name string, fn func(*model.LoadBalancer) ([]model.Event, error)) (*model.LoadBalancer, error) {
	key := store.LBKey(project, name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		b, err := r.GetLB(ctx, project, name)
		if err != nil {
			return nil, err
		}
		old := *b
		evs, err := fn(b)
		if errors.Is(err, ErrSkip) {
			return &old, nil
		}
		if err != nil {
			return nil, err
		}
		b.Name, b.Project, b.UID, b.CreatedAt = old.Name, old.Project, old.UID, old.CreatedAt
		b.UpdatedAt = r.now()
		ops := []store.Op{store.Put(key, encodeRevless(&b.Meta, b))}
		for _, e := range evs {
			e.Project, e.Object = project, LBObject(project, name)
			if e.Time.IsZero() {
				e.Time = b.UpdatedAt
			}
			ops = append(ops, EventOp(e))
		}
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(key, b.Revision)}, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			b.Revision = rev
			return b, nil
		}
	}
	return nil, fmt.Errorf("%w: load balancer %s/%s", ErrContention, project, name)
}

// FinishDeleteLB removes a balancer and releases its virtual IP in one
// transaction. A balancer already gone is not an error.
func (r *Repo) FinishDeleteLB(ctx context.Context, project, name, why string) error {
	key := store.LBKey(project, name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
		b, err := r.GetLB(ctx, project, name)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		conds := []store.Cond{store.IfRev(key, b.Revision)}
		ops := []store.Op{store.Delete(key), EventOp(model.Event{Time: r.now(), Kind: "lb.deleted", Object: LBObject(project, name),
			Project: project, Message: fmt.Sprintf("load balancer %s deleted (%s); address %s released", name, why, b.Status.VIP)})}
		if b.Status.VIP != "" {
			akey := store.AddressKey(project, b.Spec.Network, b.Status.VIP)
			kv, err := r.st.Get(ctx, akey)
			if err == nil {
				var a model.AddressAlloc
				if decode(kv, &a) == nil && a.Owner == model.LBOwner(name) {
					conds = append(conds, store.IfRev(akey, kv.ModRev))
					ops = append(ops, store.Delete(akey))
				}
			} else if !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("state: address %s: %w", b.Status.VIP, err)
			}
		}
		ok, _, err := r.txn(ctx, conds, ops)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("%w: deleting load balancer %s/%s", ErrContention, project, name)
}
