package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// ErrPlanRefused says the gate refused a decision: on the term's latest
// view it breaks a placement rule (capacity under the ratios, labels,
// pins, affinity, isolation, storage, host state). Nothing was written.
var ErrPlanRefused = errors.New("controller: refused by the placement gate")

// Placement is one VM to commit onto a host, with the explanation to
// store with it.
type Placement struct {
	VM          *model.VM
	Host        string
	Explanation *model.Explanation
}

// gate is where every placement and every move the controllers decide is
// committed: the scheduler's placements (one VM, or a gang all or
// nothing), the migrations the balancer and drains start, and the
// capacity holds of the migrations users ask for — and later HA restarts
// and scaling groups. Like Nomad's plan applier it is serial (one plan at
// a time) and re-checks each decision with the scheduler's own filters
// (scheduler.CheckOn / CheckMove) on the term's latest view before one
// transaction commits it, guarded on the revisions the check read and,
// through the term's repository, on the leadership fence. A decider may
// be stale or wrong; the gate is not.
//
// The view is a scheduler.Snapshot of every host, kept current from the
// watch cache's journal of changed hosts (and from the gate's own
// commits), so a check costs one host's filters, not a snapshot build.
type gate struct {
	mu   sync.Mutex
	repo *state.Repo
	c    *cache
	log  *slog.Logger

	sched  *scheduler.Scheduler
	snap   *scheduler.Snapshot
	policy model.Policy
	polRev int64
	shapes map[string]*model.Host      // host records as loaded into snap (cached: immutable)
	allocs map[string]model.Allocation // allocation records as loaded (read-only)

	audit Auditor // records what the gate committed (audit.go)
}

func newGate(repo *state.Repo, c *cache, log *slog.Logger) *gate {
	return &gate{repo: repo, c: c, log: log.With("component", "gate"), audit: noAudit{}}
}

// sync brings the view up to date with the cache; g.mu is held.
func (g *gate) sync() error {
	c := g.c
	c.mu.Lock()
	dirty, all := c.gateJ.take()
	if g.snap == nil || all || c.polRev != g.polRev {
		hosts := make([]*model.Host, 0, len(c.hosts))
		for _, h := range c.hosts {
			hosts = append(hosts, h)
		}
		allocs := maps.Clone(c.allocs)
		pol, rev := c.policy, c.polRev
		c.mu.Unlock()
		return g.rebuild(pol, rev, hosts, allocs)
	}
	type change struct {
		h *model.Host
		a model.Allocation
	}
	changes := make([]change, 0, len(dirty))
	for name := range dirty {
		if h := c.hosts[name]; h != nil {
			changes = append(changes, change{h, c.allocs[name]})
		}
	}
	c.mu.Unlock()
	for _, ch := range changes {
		name := ch.h.Name
		old, known := g.shapes[name]
		if !known || (old != ch.h && !sameShape(old, ch.h)) {
			g.snap.SetHost(*ch.h)
		}
		g.shapes[name] = ch.h
		if a, loaded := g.allocs[name]; known && loaded && a.Revision == ch.a.Revision {
			continue
		}
		ch.a.Host = name
		if err := g.snap.SetAllocation(ch.a); err != nil {
			return fmt.Errorf("controller: gate view of %s: %w", name, err)
		}
		g.allocs[name] = ch.a
	}
	return nil
}

// rebuild makes a new view from scratch.
func (g *gate) rebuild(pol model.Policy, rev int64, hosts []*model.Host, allocs map[string]model.Allocation) error {
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
	list := make([]model.Allocation, 0, len(allocs))
	records := make([]model.Host, len(hosts))
	g.shapes, g.allocs = make(map[string]*model.Host, len(hosts)), make(map[string]model.Allocation, len(hosts))
	for i, h := range hosts {
		a := allocs[h.Name]
		a.Host = h.Name
		list = append(list, a)
		records[i] = *h
		g.shapes[h.Name], g.allocs[h.Name] = h, a
	}
	if g.sched == nil || rev != g.polRev || g.snap == nil {
		sched, err := scheduler.New(pol)
		if err != nil {
			return fmt.Errorf("controller: gate scheduler: %w", err)
		}
		g.sched = sched
	}
	snap, err := scheduler.NewSnapshot(pol, records, list)
	if err != nil {
		return fmt.Errorf("controller: gate view: %w", err)
	}
	g.snap, g.policy, g.polRev = snap, pol, rev
	return nil
}

// sameShape reports whether two records of a host agree on everything a
// filter reads (heartbeats change the rest every few seconds).
func sameShape(a, b *model.Host) bool {
	return a.State == b.State && a.Cordoned == b.Cordoned && a.Capacity == b.Capacity && a.Ratios == b.Ratios &&
		maps.Equal(a.Labels, b.Labels) && slices.Equal(a.Pools, b.Pools) && a.Allocated == b.Allocated && a.VMs == b.VMs
}

// place re-checks placements — one VM, or a gang all or nothing, each
// member seeing the ones before it — and commits them in one transaction
// (state.Assign) guarded on the VMs', the touched allocations' and the
// policy's revisions as the check read them. It answers ok false (and no
// error) when a guard failed: the gate has then re-read what the guards
// compared into the cache, and the caller decides again. A decision that
// breaks a rule is refused with ErrPlanRefused.
func (g *gate) place(ctx context.Context, ps []Placement) (state.Assigned, bool, error) {
	out, refused, ok, err := g.commit(ctx, ps, true)
	if len(refused) > 0 {
		return state.Assigned{}, false, refused[0]
	}
	return out, ok, err
}

// placeGroup commits independent placements (a group of the scheduling
// pipeline) in one transaction, each guarded as place guards it; a
// member that breaks a rule is left out (its ErrPlanRefused is in
// refused) and the others commit. ok false: a guard failed, nothing was
// written, and the gate has re-read the allocations and the policy.
func (g *gate) placeGroup(ctx context.Context, ps []Placement) ([]*model.VM, []error, bool, error) {
	out, refused, ok, err := g.commit(ctx, ps, false)
	return out.VMs, refused, ok, err
}

// commit checks ps on the gate's view, each seeing the ones before it;
// with all, one refusal refuses them all. It then commits what passed.
func (g *gate) commit(ctx context.Context, ps []Placement, all bool) (state.Assigned, []error, bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.sync(); err != nil {
		return state.Assigned{}, nil, false, err
	}
	var assumed []string
	defer func() {
		for _, k := range assumed {
			_ = g.snap.Forget(k) // assumed below: cannot fail
		}
	}()
	allocs := map[string]model.Allocation{}
	as := make([]state.Assignment, 0, len(ps))
	var refused []error
	for _, p := range ps {
		key := p.VM.Key()
		req := scheduler.Request{Key: key, Spec: &p.VM.Spec}
		if why := g.sched.CheckOn(g.snap, req, p.Host); why != "" {
			refused = append(refused, fmt.Errorf("%w: VM %s on %s: %s", ErrPlanRefused, key, p.Host, why))
			if all {
				return state.Assigned{}, refused, false, nil
			}
			continue
		}
		if len(ps) > 1 {
			if err := g.snap.AssumeVM(key, &p.VM.Spec, p.Host); err != nil {
				refused = append(refused, fmt.Errorf("%w: VM %s on %s: %w", ErrPlanRefused, key, p.Host, err))
				if all {
					return state.Assigned{}, refused, false, nil
				}
				continue
			}
			assumed = append(assumed, key)
		}
		if _, seen := allocs[p.Host]; !seen {
			allocs[p.Host] = g.allocs[p.Host] // as checked: the guard is on this revision
		}
		as = append(as, state.Assignment{VM: p.VM, Host: p.Host, Explanation: p.Explanation})
	}
	if len(as) == 0 {
		return state.Assigned{}, refused, true, nil
	}
	out, ok, err := g.repo.Assign(ctx, as, allocs, g.polRev)
	if err != nil {
		return state.Assigned{}, refused, false, fmt.Errorf("controller: commit placement of %s: %w", as[0].VM.Key(), err)
	}
	if !ok {
		return state.Assigned{}, refused, false, g.refresh(ctx, sortedKeys(allocs))
	}
	for _, v := range out.VMs {
		g.c.putVM(v, out.Rev)
	}
	for _, k := range assumed {
		_ = g.snap.Forget(k)
	}
	assumed = nil
	for h, a := range out.Allocs {
		g.c.putAlloc(a, out.Rev)
		if err := g.snap.SetAllocation(a); err == nil {
			g.allocs[h] = a
		}
	}
	g.auditPlaced(ctx, as) // the committed ones: a group's refused members are not placed
	return out, refused, true, nil
}

// refresh re-reads, after a lost compare-and-swap, the allocations and
// records of hosts and the policy into the cache (the watches may lag
// the store; a change to a host's filters rewrites its allocation,
// state.UpdateHostFilters, so the record is read again too).
func (g *gate) refresh(ctx context.Context, hosts []string) error {
	for _, h := range hosts {
		fa, err := g.repo.GetAllocation(ctx, h)
		if err != nil {
			return err
		}
		fa.Host = h
		g.c.putAlloc(*fa, fa.Revision)
		hr, err := g.repo.GetHost(ctx, h)
		switch {
		case err == nil:
			g.c.putHost(hr)
		case !errors.Is(err, state.ErrNotFound):
			return err
		}
	}
	p, rev, err := g.repo.GetPolicy(ctx)
	if err != nil {
		return err
	}
	g.c.putPolicy(p, rev)
	return nil
}

// startMigration stores a migration the controllers decided (balancer,
// drain) with its target's capacity already held, after the gate's check
// of the move (state.CreateHeldMigration).
func (g *gate) startMigration(ctx context.Context, m *model.Migration) (*model.Migration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	created, err := g.repo.CreateHeldMigration(ctx, m, g.fitMove(ctx, m.Target))
	if err == nil {
		g.auditMove(ctx, created)
	}
	return created, err
}

// hold takes the capacity hold of a migration stored without one (a
// user's, stored by the API server) after the gate's check of the move.
func (g *gate) hold(ctx context.Context, m *model.Migration) (*model.Migration, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	held, err := g.repo.HoldTarget(ctx, m.Name, g.fitMove(ctx, m.Target))
	if err == nil && held != nil && !m.HoldTarget { // a controller's migration held its target when it was stored (and recorded then)
		g.auditMove(ctx, held)
	}
	return held, err
}

// fitMove is the gate's check of a VM moving onto target, for the state
// layer's compare-and-swap loops: it takes the source and target host
// records, the target's allocation just read and the stored policy into
// the view (moves are rare: reading them costs little, and a host the
// watches have not brought yet is no reason to refuse), runs every filter
// with the VM lifted off its source, and guards the transaction on the
// policy.
func (g *gate) fitMove(ctx context.Context, target string) state.Fit {
	return func(vm *model.VM, a *model.Allocation) ([]store.Cond, error) {
		for _, name := range []string{vm.Status.Host, target} {
			h, err := g.repo.GetHost(ctx, name)
			if errors.Is(err, state.ErrNotFound) {
				continue // the check says so
			}
			if err != nil {
				return nil, err
			}
			g.c.putHost(h)
		}
		pol, rev, err := g.repo.GetPolicy(ctx)
		if err != nil {
			return nil, err
		}
		g.c.putPolicy(pol, rev)
		fa := *a
		fa.Host = target
		g.c.putAlloc(fa, a.Revision)
		if err := g.sync(); err != nil {
			return nil, err
		}
		req := scheduler.Request{Key: vm.Key(), Spec: &vm.Spec}
		if why := g.sched.CheckMove(g.snap, req, vm.Status.Host, target); why != "" {
			return nil, fmt.Errorf("%w: moving VM %s to %s: %s", ErrPlanRefused, vm.Key(), target, why)
		}
		return []store.Cond{store.IfRev(store.PolicyKey, rev)}, nil
	}
}

// restart re-checks HA restarts — each VM lifted off its fenced host onto
// its new one, each seeing the ones before it — with every placement
// rule (scheduler.CheckMove), and commits them in one transaction
// (state.RestartElsewhere) guarded on the VMs', the touched allocations',
// the policy's and the fenced hosts' revisions. A lost guard answers
// no VMs and no error: the next pass decides again.
func (g *gate) restart(ctx context.Context, rs []state.HARestart, fenced map[string]*model.Host) (state.Assigned, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.sync(); err != nil {
		return state.Assigned{}, err
	}
	var assumed []string
	defer func() {
		for _, k := range assumed {
			_ = g.snap.Forget(k)
		}
	}()
	allocs := map[string]model.Allocation{}
	hostRevs := map[string]int64{}
	for _, x := range rs {
		key, from := x.VM.Key(), x.VM.Status.Host
		h := fenced[from]
		if h == nil || h.State != model.HostFenced {
			return state.Assigned{}, fmt.Errorf("%w: VM %s: its host %s is not fenced", ErrPlanRefused, key, from)
		}
		req := scheduler.Request{Key: key, Spec: &x.VM.Spec}
		if why := g.sched.CheckMove(g.snap, req, from, x.To); why != "" {
			return state.Assigned{}, fmt.Errorf("%w: restarting VM %s on %s: %s", ErrPlanRefused, key, x.To, why)
		}
		if err := g.snap.AssumeVM(key, &x.VM.Spec, x.To); err != nil {
			return state.Assigned{}, fmt.Errorf("%w: restarting VM %s on %s: %w", ErrPlanRefused, key, x.To, err)
		}
		assumed = append(assumed, key)
		for _, n := range []string{from, x.To} {
			if _, seen := allocs[n]; !seen {
				allocs[n] = g.allocs[n]
			}
		}
		hostRevs[from] = h.Revision
	}
	out, ok, err := g.repo.RestartElsewhere(ctx, rs, allocs, hostRevs, g.polRev)
	if err != nil {
		return state.Assigned{}, fmt.Errorf("controller: commit HA restart of %s: %w", rs[0].VM.Key(), err)
	}
	if !ok {
		return state.Assigned{}, g.refresh(ctx, sortedKeys(allocs))
	}
	for _, v := range out.VMs {
		g.c.putVM(v, out.Rev)
	}
	for _, k := range assumed {
		_ = g.snap.Forget(k)
	}
	assumed = nil
	for h, a := range out.Allocs {
		g.c.putAlloc(a, out.Rev)
		if err := g.snap.SetAllocation(a); err == nil {
			g.allocs[h] = a
		}
	}
	return out, nil
}
