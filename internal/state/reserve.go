package state

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// The failover reserve (docs/ha.md, "tolerate N host failures") is
// checked inside the admission transaction: with a reserve asked for,
// every admission reads the policy, the hosts, the allocations and the
// VMs, asks the ReserveCheck about each call in turn (the demand of the
// calls admitted before it in the batch added), and commits guarded on
// the policy and on the reserve ticket (haReserveKey) at the revisions
// it read, bumping the ticket. So two admissions that read the same
// state cannot both commit: the second's guard fails, it reads again —
// now with the first one's VMs — and its check answers anew. Without a
// reserve only the policy is read and guarded.

// haReserveKey is the reserve ticket every admission under a reserve
// writes (its value: the admission's store revision count, for humans).
const haReserveKey = store.Root + "ha/reserve-ticket"

// ErrReserve refuses an admission that would break the failover reserve;
// it is joined with a *model.FieldError on ha.tolerateHostFailures.
var ErrReserve = errors.New("state: the failover reserve would not hold")

// ReserveCheck judges the reserve over what the admission read: it
// returns a check that answers whether the VMs read plus add (the demand
// of the VMs being admitted) leave the reserve whole (nil) or why not.
// tolerate is the policy's ha.tolerateHostFailures (> 0).
type ReserveCheck func(pol model.Policy, tolerate int, hosts []*model.Host, allocs map[string]*model.Allocation, vms []*model.VM) func(add model.Resources) error

// SetReserveCheck installs the reserve judge of every later admission
// (the API server's, from internal/ha); nil admits without one.
func (r *Repo) SetReserveCheck(c ReserveCheck) { r.reserve.Store(&c) }

// reserveGuard is one admission's view of the reserve.
type reserveGuard struct {
	conds []store.Cond
	ops   []store.Op
	check func(model.Resources) error // nil: no reserve
	added model.Resources
}

// reserveGuard reads the policy and, when a reserve is asked for and a
// judge installed, what the judge needs, with the ticket's revision.
func (r *Repo) reserveGuard(ctx context.Context) (*reserveGuard, error) {
	pol, prev, err := r.GetPolicy(ctx)
	if err != nil {
		return nil, err
	}
	return r.reserveGuardFor(ctx, pol, prev)
}

// reserveGuardFor is reserveGuard with the policy already read (at
// revision prev; 0: none stored).
func (r *Repo) reserveGuardFor(ctx context.Context, pol model.Policy, prev int64) (*reserveGuard, error) {
	g := &reserveGuard{conds: []store.Cond{store.IfRev(store.PolicyKey, prev)}}
	n := pol.HAPolicy().TolerateHostFailures
	c := r.reserve.Load()
	if n <= 0 || c == nil || *c == nil {
		return g, nil
	}
	trev, count := int64(0), int64(0)
	kv, err := r.st.Get(ctx, haReserveKey)
	switch {
	case err == nil:
		trev = kv.ModRev
		count, _ = strconv.ParseInt(string(kv.Value), 10, 64)
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("state: get the reserve ticket: %w", err)
	}
	hosts, _, err := r.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	allocs, _, err := r.ListAllocations(ctx)
	if err != nil {
		return nil, err
	}
	vms, _, err := r.ListVMs(ctx, "")
	if err != nil {
		return nil, err
	}
	g.check = (*c)(pol, n, hosts, allocs, vms)
	g.conds = append(g.conds, store.IfRev(haReserveKey, trev))
	g.ops = []store.Op{store.Put(haReserveKey, []byte(strconv.FormatInt(count+1, 10)))}
	return g, nil
}

// admit checks one call's demand on top of the calls admitted before it;
// a refused call adds nothing.
func (g *reserveGuard) admit(demand model.Resources) error {
	if g.check == nil {
		return nil
	}
	add := g.added.Add(demand)
	if err := g.check(add); err != nil {
		return fmt.Errorf("%w: %w", ErrReserve, &model.FieldError{Field: "ha.tolerateHostFailures", Message: err.Error()})
	}
	g.added = add
	return nil
}
