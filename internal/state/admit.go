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

// Admission of VM creates is group-committed across projects: concurrent
// CreateVMs calls queue up, and a committer takes the queue's head —
// calls of any projects no other batch in flight holds, up to a
// transaction's budget (up to admitCommitters batches in flight) — and
// commits it in one transaction guarded on each project present, its
// usage key and the images, each VM key absent (and on the policy); then
// the next batch, until the queue is empty. Each call is still all or
// nothing and is answered on its own (quota, name taken, image, a
// project that does not exist), and each project's usage is checked
// against its own quota and bumped under its own guard: calls of two
// projects sharing a transaction never count against each other. At one
// VM a POST the fifth round measured one admission transaction per 3.3
// creates with a queue per project (8 projects, 64 clients): 0.3 of a
// transaction a VM, the one cost a VM still paid nearly alone.

// admitBudget is how many operations (and conditions) one admission
// transaction may use: every VM takes two (itself and its vm.created
// event), every project two (its usage key, and its guards).
const admitBudget = MaxTxnOps - 8

// admitBytes bounds the bytes of one admission transaction, well under
// etcd's request limit (1.5 MiB by default): a VM record is a few KiB,
// but its cloud-init seed may add up to 64 KiB of user data, sealed and
// in base64 a third more (87 KiB). Without it, two dozen creates with
// large user data arriving together made one transaction etcd refuses.
// A call alone over it still goes (its own transaction: all or nothing).
const admitBytes = 1 << 20

// reqBytes is about what a call adds to an admission transaction.
func reqBytes(vms []*model.VM) int {
	n := 0
	for _, v := range vms {
		n += 4<<10 + v.Spec.CloudInit.StoredBytes()
	}
	return n
}

// admitBatchTimeout bounds one batch's reads and transaction: the batches
// are the queue's, not any call's, so no call's context bounds them.
const admitBatchTimeout = time.Minute

// admitReq is one CreateVMs call waiting in the queue.
type admitReq struct {
	repo    *Repo       // the call's repository (its store: a term's is fenced)
	project string      // every VM's project
	vms     []*model.VM // prepared: UID, timestamps, phase pending
	out     []*model.VM
	err     error
	done    chan struct{}
	// alone: the call carries members of a hard affinity group; they stay
	// in a transaction of their own, so that the scheduler recognises
	// them as one request's gang (same create revision).
	alone bool
	// carry is the write the call's context carries (its audit intent,
	// store.CarriedOp): it commits with the call's VMs.
	carry   store.Op
	carried bool
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

// admitCommitters is how many admission transactions may be in flight
// at once, on disjoint projects: with one, the creates waited for each
// commit in turn (a sixth-round build placed 302–667 a second at one VM
// a POST against main's 825, its admissions the bottleneck); a queue per
// project had up to one per project.
const admitCommitters = 4

type admitter struct {
	mu       sync.Mutex
	pending  []*admitReq
	running  int             // committers draining pending
	inflight map[string]bool // projects in a batch being committed
	// last is, per project, what its last admission committed (admitBase):
	// the next batch with the project starts from it instead of reading
	// the project and its usage again; pol is the policy as the last
	// commit was guarded on it.
	last map[string]*admitBase
	pol  *admitPolicy
	// skip counts, per project, the admissions that read the store
	// instead of starting from a kept base, after a batch that started
	// from a kept base of it lost its guard: where other servers create
	// in the same project a kept base is mostly stale, and a lost guard
	// costs a transaction.
	skip map[string]int
}

// skipAfterMiss is how many admissions of a project read the store after
// a kept base of it lost its guard.
const skipAfterMiss = 16

// admitBase is what an admission of a project starts from: the project
// and its usage, each with the revision the transaction is guarded on.
// Read from the store, or kept from the project's last admission (the
// project as read then, the usage as that transaction wrote it, at its
// revision): a kept base gone stale (another server's create, a delete,
// a quota change) fails its guard like a read one that changed since,
// and the retry reads the store.
type admitBase struct {
	p    *model.Project
	u    model.Usage
	urev int64
}

// admitPolicy is the policy an admission is guarded on, at revision rev
// (0: none stored).
type admitPolicy struct {
	pol model.Policy
	rev int64
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

// keptPolicy returns the kept policy (nil: none); batches in flight
// together share it (dropPolicy forgets it).
func (a *admitter) keptPolicy() *admitPolicy {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pol
}

// dropPolicy forgets the kept policy (a batch guarded on it lost a
// guard: it may be stale).
func (a *admitter) dropPolicy() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pol = nil
}

// missed notes that project's kept base lost its guard (or shared a
// transaction that lost one).
func (a *admitter) missed(project string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.skip == nil {
		a.skip = map[string]int{}
	}
	a.skip[project] = skipAfterMiss
}

func (a *admitter) keep(bases map[string]*admitBase, pol *admitPolicy) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[string]*admitBase{}
	}
	for project, b := range bases {
		a.last[project] = b
	}
	a.pol = pol
}

// admit queues req and, when nobody commits the queue now, starts a
// committer that commits batches until it is empty; it returns req's
// answer (or ctx's error: the VMs may still be created, as by a
// transaction that commits after its caller gave up).
func (r *Repo) admit(ctx context.Context, project string, req *admitReq) ([]*model.VM, error) {
	req.repo, req.project = r, project
	req.carry, req.carried = store.CarriedOp(ctx)
	a := r.admits
	a.mu.Lock()
	a.pending = append(a.pending, req)
	// a committer in flight with the project takes the call after its
	// batch; any other takes it after its own
	start := a.running < admitCommitters && !a.inflight[project]
	if start {
		a.running++
	}
	a.mu.Unlock()
	if start {
		// The batches are the queue's, not this call's: they outlive its
		// context, and not its audit intent (each call's rides with its
		// own VMs: admitOnce). A committer of its own answers every call
		// as soon as its batch commits, the starting one included.
		go a.drain(store.WithoutCarrier(context.WithoutCancel(ctx)))
	}
	select {
	case <-req.done:
		return req.out, req.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// drain commits batches until the queue is empty.
func (a *admitter) drain(ctx context.Context) {
	for {
		batch := a.take()
		if batch == nil {
			return
		}
		bctx, cancel := context.WithTimeout(ctx, admitBatchTimeout)
		batch[0].repo.admitBatch(bctx, batch)
		cancel()
		a.mu.Lock()
		for _, req := range batch {
			delete(a.inflight, req.project)
		}
		a.mu.Unlock()
	}
}

// take removes the next batch from the queue (nil, and one committer
// fewer, when nothing in it can be taken): calls of one repository, of
// projects no other batch in flight holds, within the budget; a gang's
// call alone. The batch's projects are in flight until drain releases
// them.
func (a *admitter) take() []*admitReq {
	a.mu.Lock()
	defer a.mu.Unlock()
	var batch, rest []*admitReq
	projects := map[string]bool{}
	ops, size, closed := 0, 0, false
	for _, req := range a.pending {
		if closed || a.inflight[req.project] || (len(batch) > 0 && req.repo != batch[0].repo) {
			rest = append(rest, req)
			continue
		}
		cost := 2 * len(req.vms)
		if req.carried {
			cost++
		}
		if !projects[req.project] {
			cost += 2
		}
		b := reqBytes(req.vms)
		if len(batch) > 0 && (req.alone || batch[0].alone || ops+cost > admitBudget || size+b > admitBytes) {
			closed = true
			rest = append(rest, req)
			continue
		}
		batch = append(batch, req)
		projects[req.project] = true
		ops += cost
		size += b
	}
	a.pending = rest
	if len(batch) == 0 {
		a.running--
		return nil
	}
	if a.inflight == nil {
		a.inflight = map[string]bool{}
	}
	for p := range projects {
		a.inflight[p] = true
	}
	return batch
}

// admitBatch admits the calls of batch in as few transactions as it can:
// a call over its project's quota, naming a taken VM or an image that is
// not ready, or of a project that does not exist, is answered with its
// error, the others are committed together.
func (r *Repo) admitBatch(ctx context.Context, batch []*admitReq) {
	all := batch
	defer func() {
		for _, req := range all {
			close(req.done)
		}
	}()
	bases := map[string]*admitBase{}
	for _, req := range batch {
		if _, ok := bases[req.project]; !ok {
			bases[req.project] = r.admits.kept(req.project)
		}
	}
	pol := r.admits.keptPolicy()
	for attempt := 0; attempt < maxAttempts && len(batch) > 0; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			fail(batch, err)
			return
		}
		if attempt > 0 {
			// a guard failed, which one the store does not say: every
			// kept base of the batch may be stale; read them all again
			for project, b := range bases {
				if b != nil {
					r.admits.missed(project)
				}
			}
			clear(bases)
			if pol != nil {
				r.admits.dropPolicy()
			}
			pol = nil
		}
		usedKept := pol != nil
		for _, b := range bases {
			usedKept = usedKept || b != nil
		}
		ok, rev, left, next, npol, err := r.admitOnce(ctx, batch, bases, pol)
		if err != nil {
			fail(left, err)
			return
		}
		if ok {
			if next != nil {
				r.admits.keep(next, npol)
			}
			for _, req := range left {
				for _, v := range req.vms {
					v.Revision = rev
				}
				req.out = req.vms
			}
			// a refusal judged on kept state (no guard checked it: it
			// wrote nothing) is judged again on what the store holds
			again := refusedOnKept(batch, usedKept)
			if len(again) == 0 {
				return
			}
			clear(bases)
			if pol != nil {
				r.admits.dropPolicy()
			}
			pol, batch = nil, again
			continue
		}
		batch = r.dropTaken(ctx, left)
	}
	if len(batch) == 0 {
		return
	}
	fail(batch, fmt.Errorf("%w: creating VMs in project %s", ErrContention, batch[0].project))
}

// refusedOnKept returns, when the batch started from kept state, its
// calls refused by a quota or the reserve, their answers cleared.
func refusedOnKept(batch []*admitReq, usedKept bool) []*admitReq {
	if !usedKept {
		return nil
	}
	var again []*admitReq
	for _, req := range batch {
		if req.out == nil && (errors.Is(req.err, ErrQuotaExceeded) || errors.Is(req.err, ErrReserve)) {
			req.err = nil
			again = append(again, req)
		}
	}
	return again
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
	return &admitBase{p: p, u: u, urev: urev}, nil
}

// admitted is one project's part of an admission transaction.
type admitted struct {
	base *admitBase
	u    model.Usage // the base's usage with the calls admitted so far
	err  error       // reading the base failed: every call of it fails so
	any  bool        // a call of the project is in the transaction
}

// admitOnce starts from bases (a project's nil or absent: read from the
// store; read ones are added to bases) and pol (nil: read), reads the
// images, answers the calls that cannot be admitted, and tries one
// transaction for the rest (left), guarded on every base's revisions and
// the policy's. ok false: a guard failed. next and npol are what the
// next admissions of the projects may start from (after a commit).
func (r *Repo) admitOnce(ctx context.Context, batch []*admitReq, bases map[string]*admitBase, pol *admitPolicy) (bool, int64, []*admitReq, map[string]*admitBase, *admitPolicy, error) {
	if pol == nil {
		p, prev, err := r.GetPolicy(ctx)
		if err != nil {
			return false, 0, batch, nil, nil, err
		}
		pol = &admitPolicy{pol: p, rev: prev}
	}
	rg, err := r.reserveGuardFor(ctx, pol.pol, pol.rev)
	if err != nil {
		return false, 0, batch, nil, nil, err
	}
	conds := append([]store.Cond(nil), rg.conds...)
	parts := map[string]*admitted{}
	var order []string // projects with admitted calls, in order
	seenImage := map[string]bool{}
	var ops []store.Op
	var left []*admitReq
	now := r.now()
	for _, req := range batch {
		pa := parts[req.project]
		if pa == nil {
			pa = &admitted{base: bases[req.project]}
			if pa.base == nil {
				pa.base, pa.err = r.readBase(ctx, req.project)
				if pa.err == nil {
					bases[req.project] = pa.base
				}
			}
			if pa.base != nil {
				pa.u = pa.base.u
			}
			parts[req.project] = pa
		}
		if pa.err != nil {
			req.err = pa.err
			continue
		}
		if err := r.admitCall(ctx, req, pa, rg, &conds, seenImage); err != nil {
			req.err = err
			continue
		}
		if !pa.any {
			pa.any = true
			order = append(order, req.project)
			conds = append(conds, store.IfRev(store.ProjectKey(req.project), pa.base.p.Revision),
				store.IfRev(store.UsageKey(req.project), pa.base.urev))
		}
		for _, v := range req.vms {
			key := store.VMKey(req.project, v.Name)
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
		return true, 0, nil, nil, nil, nil
	}
	for _, project := range order {
		ops = append(ops, store.Put(store.UsageKey(project), encode(parts[project].u)))
	}
	ops = append(ops, rg.ops...)
	ok, rev, err := r.txn(ctx, conds, ops)
	if !ok || err != nil {
		return ok, rev, left, nil, nil, err
	}
	next := make(map[string]*admitBase, len(order))
	for _, project := range order {
		pa := parts[project]
		next[project] = &admitBase{p: pa.base.p, u: pa.u, urev: rev}
	}
	return true, rev, left, next, pol, nil
}

// admitCall checks one call against its project's quota (the calls of
// the project admitted before it counted), its images and the reserve;
// on success it counts the call in pa's usage and adds the images'
// guards to conds.
func (r *Repo) admitCall(ctx context.Context, req *admitReq, pa *admitted, rg *reserveGuard, conds *[]store.Cond, seenImage map[string]bool) error {
	var demand model.Resources
	for _, v := range req.vms {
		demand = demand.Add(v.Spec.Demand())
	}
	if err := pa.base.p.Quota.Admit(pa.u, demand.CPUs, demand.Memory, demand.Disk, len(req.vms)); err != nil {
		// a name already taken is the more useful answer, whatever
		// order the group's calls came in (read on this path only)
		if taken, terr := r.firstTaken(ctx, req.project, req.vms); terr == nil && taken != "" {
			return fmt.Errorf("%w: VM %s/%s", ErrExists, req.project, taken)
		}
		return fmt.Errorf("%w: %w", ErrQuotaExceeded, err)
	}
	ic, err := r.imageConds(ctx, req.vms)
	if err != nil {
		return err
	}
	if err := rg.admit(demand); err != nil {
		return err
	}
	for _, c := range ic {
		if !seenImage[c.Key] {
			seenImage[c.Key] = true
			*conds = append(*conds, c)
		}
	}
	pa.u = usageAdd(pa.u, demand, len(req.vms))
	return nil
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
func (r *Repo) dropTaken(ctx context.Context, reqs []*admitReq) []*admitReq {
	var again []*admitReq
	for _, req := range reqs {
		var taken string
		taken, req.err = r.firstTaken(ctx, req.project, req.vms)
		switch {
		case req.err != nil:
		case taken != "":
			req.err = fmt.Errorf("%w: VM %s/%s", ErrExists, req.project, taken)
		default:
			again = append(again, req)
		}
	}
	return again
}
