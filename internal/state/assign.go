package state

import (
	"context"
	"fmt"
	"sort"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// MaxTxnOps is etcd's default cap on the operations (and, separately,
// the comparisons) of one transaction.
const MaxTxnOps = 128

// Assignment is one placement decision to store: VM (as read, with its
// revision) goes to Host, for the reasons in Explanation.
type Assignment struct {
	VM          *model.VM
	Host        string
	Explanation *model.Explanation
}

// Assigned is what Assign stored: the VMs and the touched hosts'
// allocations, with the revision they were written at.
type Assigned struct {
	VMs    []*model.VM
	Allocs map[string]model.Allocation
	Rev    int64
}

// Assign stores placement decisions in one transaction, all or nothing:
// each VM gets its host and phase creating, its explanation is written
// at its own key (store.ExplanationKey: not in the record, which later
// status reports rewrite and every view decodes); each touched
// host's allocation — given as read, with its revision, in allocs — gets
// the VMs' demand (AllocAdd); a phase event is written per VM. It is
// guarded on every VM's revision, every touched allocation's revision and
// the policy's revision (0: none stored), plus the repository's term. The
// explanations, then the events, ride in the same transaction when they
// fit under the store's cap on operations (MaxOps), else in transactions
// right after (a gang larger than about a third of the cap: a crash in
// between loses only them; an explanation left for a VM deleted
// meanwhile is pruned by the controllers). It reports whether
// the guards held; a group too large for one transaction is an error.
//
// The caller decides; Assign only stores. The controllers call it from
// their gate, after re-checking the decisions with the scheduler's rules.
func (r *Repo) Assign(ctx context.Context, as []Assignment, allocs map[string]model.Allocation, policyRev int64) (Assigned, bool, error) {
	now := r.now()
	out := Assigned{Allocs: map[string]model.Allocation{}}
	base := map[string]int64{}
	conds := make([]store.Cond, 0, 2*len(as)+1)
	ops := make([]store.Op, 0, 2*len(as))
	var events []store.Op
	expls := make([]store.Op, 0, len(as))
	for _, a := range as {
		nv := *a.VM
		nv.Status.Host, nv.Status.Phase = a.Host, model.PhaseCreating
		nv.Status.Explanation, nv.Status.Message = nil, ""
		expls = append(expls, explanationOp(&nv, a.Explanation))
		nv.UpdatedAt = now
		followOwner(a.VM, &nv)
		out.VMs = append(out.VMs, &nv)
		conds = append(conds, store.IfRev(store.VMKey(nv.Project, nv.Name), a.VM.Revision))
		ops = append(ops, store.Put(store.VMKey(nv.Project, nv.Name), encodeVM(&nv)))
		events = append(events, TransitionOps(a.VM, &nv, now)...)
		al, seen := out.Allocs[a.Host]
		if !seen {
			al = cloneAllocation(allocs[a.Host])
			base[a.Host] = al.Revision
		}
		al.Host = a.Host
		AllocAdd(&al, a.VM)
		out.Allocs[a.Host] = al
	}
	hosts := make([]string, 0, len(out.Allocs))
	for h := range out.Allocs {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		al := out.Allocs[h]
		al.UpdatedAt = now
		out.Allocs[h] = al
		conds = append(conds, store.IfRev(store.AllocKey(h), base[h]))
		ops = append(ops, store.Put(store.AllocKey(h), encode(al)))
	}
	conds = append(conds, store.IfRev(store.PolicyKey, policyRev))
	if max := r.MaxOps(); len(ops) > max || len(conds) >= max {
		return out, false, fmt.Errorf("state: %d placements on %d hosts need %d operations, over the store's %d", len(as), len(hosts), len(ops), max)
	}
	if len(ops)+len(expls) <= r.MaxOps() {
		ops = append(ops, expls...)
	} else {
		events = append(expls, events...)
	}
	rev, ok, err := r.commitWithEvents(ctx, conds, ops, events, "placement")
	if !ok {
		return out, false, err
	}
	out.stamp(rev)
	return out, true, err
}

// stamp records the revision the VMs and allocations were written at.
func (a *Assigned) stamp(rev int64) {
	a.Rev = rev
	for _, v := range a.VMs {
		v.Revision = rev
	}
	for h, al := range a.Allocs {
		al.Revision = rev
		a.Allocs[h] = al
	}
}

// commitWithEvents commits ops under conds with the events in the same
// transaction when all fit under MaxTxnOps, else the events right after
// in batches (events are a log, not state: a crash in between loses only
// them). ok false: a guard failed and nothing was written; an error with
// ok true: the change committed at rev, some of its events did not.
func (r *Repo) commitWithEvents(ctx context.Context, conds []store.Cond, ops, events []store.Op, what string) (int64, bool, error) {
	inline := len(ops)+len(events) <= r.MaxOps()
	if inline {
		ops = append(ops, events...)
	}
	ok, rev, err := r.txn(ctx, conds, ops)
	if err != nil || !ok {
		return 0, false, err
	}
	for !inline && len(events) > 0 {
		n := min(len(events), MaxTxnOps)
		if _, _, err := r.txn(ctx, nil, events[:n]); err != nil {
			return rev, true, fmt.Errorf("state: record %s events: %w", what, err)
		}
		events = events[n:]
	}
	return rev, true, nil
}

// cloneAllocation returns a deep copy of a that callers may change.
func cloneAllocation(a model.Allocation) model.Allocation {
	c := a
	c.VMs = make(map[string]bool, len(a.VMs)+1)
	for k, v := range a.VMs {
		c.VMs[k] = v
	}
	c.Domains = cloneCounts(a.Domains)
	c.Groups = cloneCounts(a.Groups)
	return c
}

func cloneCounts(m map[string]int) map[string]int {
	if m == nil {
		return nil
	}
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
