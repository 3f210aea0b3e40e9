package state

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// HARestart is one VM of a fenced host to restart on another: VM as read
// (with its revision), the host it goes to.
type HARestart struct {
	VM *model.VM
	To string
}

// RestartElsewhere stores HA restarts in one transaction, all or nothing:
// each VM gets its new host, phase creating, and a new owner record of
// its disks (the new host, the epoch raised by one), so that its old host
// can never open them again; the old hosts' allocations release the VMs
// and the new hosts' take them. It is guarded on every VM's revision,
// every touched allocation's revision (allocs, as read), the policy's
// revision, and each old host's record at the revision read in hostRevs —
// the host the controller saw fenced (a host renewing again changes its
// record, and then nothing moves). It reports whether the guards held.
func (r *Repo) RestartElsewhere(ctx context.Context, rs []HARestart, allocs map[string]model.Allocation, hostRevs map[string]int64, policyRev int64) (Assigned, bool, error) {
	now := r.now()
	out := Assigned{Allocs: map[string]model.Allocation{}}
	var conds []store.Cond
	var ops, events []store.Op
	touch := func(h string) *model.Allocation {
		if _, ok := out.Allocs[h]; !ok {
			a := cloneAllocation(allocs[h])
			a.Host = h
			out.Allocs[h] = a
		}
		a := out.Allocs[h]
		return &a
	}
	for _, x := range rs {
		from := x.VM.Status.Host
		nv := *x.VM
		epoch := int64(0)
		if nv.Status.Owner != nil {
			epoch = nv.Status.Owner.Epoch
		}
		nv.Status.Host, nv.Status.Phase = x.To, model.PhaseCreating
		nv.Status.Owner = &model.DiskOwner{Host: x.To, Epoch: epoch + 1}
		nv.Status.HAReason, nv.Status.LastError = "", ""
		nv.Status.Message = fmt.Sprintf("restarted by HA: host %s failed and was fenced", from)
		nv.Status.StartedAt = nil
		nv.UpdatedAt = now
		out.VMs = append(out.VMs, &nv)
		conds = append(conds, store.IfRev(store.VMKey(nv.Project, nv.Name), x.VM.Revision))
		ops = append(ops, store.Put(store.VMKey(nv.Project, nv.Name), encodeVM(&nv)))
		events = append(events, TransitionOps(x.VM, &nv, now)...)
		src := touch(from)
		AllocRelease(src, x.VM)
		out.Allocs[from] = *src
		dst := touch(x.To)
		AllocAdd(dst, x.VM)
		out.Allocs[x.To] = *dst
	}
	hosts := make([]string, 0, len(out.Allocs))
	for h := range out.Allocs {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		a := out.Allocs[h]
		a.UpdatedAt = now
		out.Allocs[h] = a
		conds = append(conds, store.IfRev(store.AllocKey(h), allocs[h].Revision))
		ops = append(ops, store.Put(store.AllocKey(h), encode(a)))
	}
	for h, rev := range hostRevs {
		conds = append(conds, store.IfRev(store.HostKey(h), rev))
	}
	conds = append(conds, store.IfRev(store.PolicyKey, policyRev))
	if len(ops) > MaxTxnOps || len(conds) >= MaxTxnOps {
		return out, false, fmt.Errorf("state: %d HA restarts need %d operations, over etcd's %d", len(rs), len(ops), MaxTxnOps)
	}
	rev, ok, err := r.commitWithEvents(ctx, conds, ops, events, "HA restart")
	if !ok {
		return out, false, err
	}
	out.stamp(rev)
	return out, true, err
}

// GetHAState reads the HA controller's record (empty when none).
func (r *Repo) GetHAState(ctx context.Context) (*model.HAState, int64, error) {
	kv, err := r.st.Get(ctx, store.HAStateKey)
	if errors.Is(err, store.ErrNotFound) {
		return &model.HAState{}, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("state: get HA state: %w", err)
	}
	var s model.HAState
	if err := decode(kv, &s); err != nil {
		return nil, 0, err
	}
	return &s, kv.ModRev, nil
}

// RecordFailover puts f first in the HA record (replacing an entry of the
// same host and fence time), keeping the newest model.MaxHAFailovers.
func (r *Repo) RecordFailover(ctx context.Context, f model.HAFailover) error {
	for {
		s, rev, err := r.GetHAState(ctx)
		if err != nil {
			return err
		}
		list := []model.HAFailover{f}
		for _, o := range s.Failovers {
			if o.Host == f.Host && o.FencedAt.Equal(f.FencedAt) {
				continue
			}
			list = append(list, o)
		}
		if len(list) > model.MaxHAFailovers {
			list = list[:model.MaxHAFailovers]
		}
		s.Failovers = list
		ok, _, err := r.txn(ctx, []store.Cond{store.IfRev(store.HAStateKey, rev)}, []store.Op{store.Put(store.HAStateKey, encode(s))})
		if err != nil {
			return fmt.Errorf("state: record failover of %s: %w", f.Host, err)
		}
		if ok {
			return nil
		}
	}
}
