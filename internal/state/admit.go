package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Admission of VM creates is group-committed per project: concurrent
// CreateVMs calls of one project queue up, and the first of them commits
// everything queued in one transaction (guarded on the project, its
// usage key and the images, each VM key absent), then the next batch,
// until the queue is empty. Each call is still all or nothing and is
// answered on its own (quota, name taken, image), and projects never
// wait for each other: their queues and usage keys are separate.

// admitBudget is how many operations (and conditions) one admission
// transaction may use: every VM takes two (itself and its vm.created
// event), the usage key one.
const admitBudget = MaxTxnOps - 8

// admitReq is one CreateVMs call waiting in its project's queue.
type admitReq struct {
	vms  []*model.VM // prepared: UID, timestamps, phase pending
	out  []*model.VM
	err  error
	done chan struct{}
	// alone: the call carries members of a hard affinity group; they stay
	// in a transaction of their own, so that the scheduler recognises
	// them as one request's gang (same create revision).
	alone bool
	// carry is the write the call's context carries (its audit intent,
	// store.CarriedOp): it commits with the call's VMs.
	carry   store.Op
	carried bool
}

// admitQueue is one project's queue.
type admitQueue struct {
	pending []*admitReq
	running bool
}

// hardGrouped says whether vms hold a member of a hard affinity or
// anti-affinity group.
func hardGrouped(vms []*model.VM) bool {
	for _, v := range vms {
		p := &v.Spec.Placement
		if p.AffinityGroup != "" && (p.Affinity == model.AffinityHard || p.Affinity == model.AntiAffinityHard) {
			return true
		}
	}
	return false
}

type admitter struct {
	mu     sync.Mutex
	queues map[string]*admitQueue
	// last is, per project, what its last admission committed (admitBase):
	// the next batch of the project starts from it instead of reading the
	// project, its usage and the policy again.
	last map[string]*admitBase
	// skip counts, per project, the admissions that read the store
	// instead of starting from a kept base, after a kept base lost its
	// guard: where other servers create in the same project a kept base
	// is mostly stale, and a lost guard costs a transaction.
	skip map[string]int
}

// skipAfterMiss is how many admissions of a project read the store after
// a kept base of it lost its guard.
const skipAfterMiss = 16

// admitBase is what an admission starts from: the project, its usage and
// the policy, each with the revision the transaction is guarded on. Read
// from the store, or kept from the project's last admission (the project
// and policy as read then, the usage as that transaction wrote it, at its
// revision): a kept base gone stale (another server's create, a delete, a
// quota or policy change) fails its guard like a read one that changed
// since, and the retry reads the store.
type admitBase struct {
	p    *model.Project
	u    model.Usage
	urev int64
	pol  model.Policy
	prev int64
}

// kept returns project's kept base (nil: none, or one is not to be used
// now) and forgets it: a batch that fails leaves none, so the next reads
// the store.
func (a *admitter) kept(project string) *admitBase {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.last[project]
	delete(a.last, project)
	if a.skip[project] > 0 {
		a.skip[project]--
		if a.skip[project] == 0 {
			delete(a.skip, project)
		}
		return nil
	}
	return b
}

// missed notes that project's kept base lost its guard.
func (a *admitter) missed(project string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.skip == nil {
		a.skip = map[string]int{}
	}
	a.skip[project] = skipAfterMiss
}

func (a *admitter) keep(project string, b *admitBase) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[string]*admitBase{}
	}
	a.last[project] = b
}

// admit queues req in project's queue and, when nobody commits that
// queue now, commits batches until it is empty; it returns req's answer
// (or ctx's error: the VMs may still be created, as by a transaction that
// commits after its caller gave up).
func (r *Repo) admit(ctx context.Context, project string, req *admitReq) ([]*model.VM, error) {
	req.carry, req.carried = store.CarriedOp(ctx)
	a := r.admits
	a.mu.Lock()
	q := a.queues[project]
	if q == nil {
		q = &admitQueue{}
		a.queues[project] = q
	}
	q.pending = append(q.pending, req)
	lead := !q.running
	q.running = true
	a.mu.Unlock()
	if lead {
		// The batches are the queue's, not this call's: they outlive its
		// context, bounded; and not its audit intent (each call's rides
		// with its own VMs: admitOnce).
		bctx, cancel := context.WithTimeout(store.WithoutCarrier(context.WithoutCancel(ctx)), time.Minute)
		for {
			batch := a.take(project)
			if batch == nil {
				break
			}
			r.admitBatch(bctx, project, batch)
		}
		cancel()
	}
	select {
	case <-req.done:
		return req.out, req.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// take removes the next batch from project's queue (nil, and the queue
// no longer running, when it is empty).
func (a *admitter) take(project string) []*admitReq {
	a.mu.Lock()
	defer a.mu.Unlock()
	q := a.queues[project]
	if len(q.pending) == 0 {
		q.running = false
		delete(a.queues, project)
		return nil
	}
	n, ops := 0, 1
	for _, req := range q.pending {
		cost := 2 * len(req.vms)
		if req.carried {
			cost++
		}
		if n > 0 && (req.alone || q.pending[0].alone || ops+cost > admitBudget) {
			break
		}
		n, ops = n+1, ops+cost
	}
	batch := q.pending[:n:n]
	q.pending = q.pending[n:]
	return batch
}

// admitBatch admits the calls of batch in as few transactions as it can:
// a call over quota, naming a taken VM or an image that is not ready is
// answered with its error, the others are committed together.
func (r *Repo) admitBatch(ctx context.Context, project string, batch []*admitReq) {
	all := batch
	defer func() {
		for _, req := range all {
			close(req.done)
		}
	}()
	base := r.admits.kept(project)
	for attempt := 0; attempt < maxAttempts && len(batch) > 0; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			fail(batch, err)
			return
		}
		if attempt > 0 {
			if base != nil {
				r.admits.missed(project)
			}
			base = nil // read the store again
		}
		ok, rev, left, next, err := r.admitOnce(ctx, project, batch, base)
		if err != nil {
			fail(left, err)
			return
		}
		if ok {
			if next != nil {
				r.admits.keep(project, next)
			}
			for _, req := range left {
				for _, v := range req.vms {
					v.Revision = rev
				}
				req.out = req.vms
			}
			return
		}
		batch = r.dropTaken(ctx, project, left)
	}
	fail(batch, fmt.Errorf("%w: creating VMs in project %s", ErrContention, project))
}

func fail(reqs []*admitReq, err error) {
	for _, req := range reqs {
		if req.err == nil && req.out == nil {
			req.err = err
		}
	}
}

// readBase reads what an admission of project starts from.
func (r *Repo) readBase(ctx context.Context, project string) (*admitBase, error) {
	p, err := r.GetProject(ctx, project)
	if err != nil {
		return nil, err
	}
	u, urev, err := r.GetUsage(ctx, project)
	if err != nil {
		return nil, err
	}
	pol, prev, err := r.GetPolicy(ctx)
	if err != nil {
		return nil, err
	}
	return &admitBase{p: p, u: u, urev: urev, pol: pol, prev: prev}, nil
}

// admitOnce starts from base (nil: reads the project, its usage and the
// policy), reads the images, answers the calls that cannot be admitted,
// and tries one transaction for the rest (left), guarded on base's
// revisions. ok false: a guard failed. next is the base the next
// admission of the project may start from (after a commit).
func (r *Repo) admitOnce(ctx context.Context, project string, batch []*admitReq, base *admitBase) (bool, int64, []*admitReq, *admitBase, error) {
	if base == nil {
		b, err := r.readBase(ctx, project)
		if err != nil {
			return false, 0, batch, nil, err
		}
		base = b
	}
	p, u, urev := base.p, base.u, base.urev
	rg, err := r.reserveGuardFor(ctx, base.pol, base.prev)
	if err != nil {
		return false, 0, batch, nil, err
	}
	conds := []store.Cond{store.IfRev(store.ProjectKey(project), p.Revision), store.IfRev(store.UsageKey(project), urev)}
	conds = append(conds, rg.conds...)
	seenImage := map[string]bool{}
	var ops []store.Op
	var left []*admitReq
	now := r.now()
	for _, req := range batch {
		var demand model.Resources
		for _, v := range req.vms {
			demand = demand.Add(v.Spec.Demand())
		}
		if err := p.Quota.Admit(u, demand.CPUs, demand.Memory, demand.Disk, len(req.vms)); err != nil {
			// a name already taken is the more useful answer, whatever
			// order the group's calls came in (read on this path only)
			req.err = fmt.Errorf("%w: %w", ErrQuotaExceeded, err)
			if taken, terr := r.firstTaken(ctx, project, req.vms); terr == nil && taken != "" {
				req.err = fmt.Errorf("%w: VM %s/%s", ErrExists, project, taken)
			}
			continue
		}
		ic, err := r.imageConds(ctx, req.vms)
		if err != nil {
			req.err = err
			continue
		}
		for _, c := range ic {
			if !seenImage[c.Key] {
				seenImage[c.Key] = true
				conds = append(conds, c)
			}
		}
		if err := rg.admit(demand); err != nil {
			req.err = err
			continue
		}
		u = usageAdd(u, demand, len(req.vms))
		for _, v := range req.vms {
			key := store.VMKey(project, v.Name)
			conds = append(conds, store.IfAbsent(key))
			ops = append(ops, store.Put(key, encodeVM(v)))
			ops = append(ops, TransitionOps(nil, v, now)...)
		}
		if req.carried {
			ops = append(ops, req.carry)
		}
		left = append(left, req)
	}
	if len(left) == 0 {
		return true, 0, nil, nil, nil
	}
	ops = append(ops, store.Put(store.UsageKey(project), encode(u)))
	ops = append(ops, rg.ops...)
	ok, rev, err := r.txn(ctx, conds, ops)
	if !ok || err != nil {
		return ok, rev, left, nil, err
	}
	return true, rev, left, &admitBase{p: p, u: u, urev: rev, pol: base.pol, prev: base.prev}, nil
}

// firstTaken returns the name of the first of vms that exists in the
// store ("" when none does).
func (r *Repo) firstTaken(ctx context.Context, project string, vms []*model.VM) (string, error) {
	for _, v := range vms {
		_, err := r.st.Get(ctx, store.VMKey(project, v.Name))
		if err == nil {
			return v.Name, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return "", err
		}
	}
	return "", nil
}

// dropTaken answers, after a lost transaction, the calls naming a VM that
// exists now, and returns the others to try again.
func (r *Repo) dropTaken(ctx context.Context, project string, reqs []*admitReq) []*admitReq {
	var again []*admitReq
	for _, req := range reqs {
		var taken string
		taken, req.err = r.firstTaken(ctx, project, req.vms)
		switch {
		case req.err != nil:
		case taken != "":
			req.err = fmt.Errorf("%w: VM %s/%s", ErrExists, project, taken)
		default:
			again = append(again, req)
		}
	}
	return again
}
