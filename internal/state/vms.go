package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	jsonv2 "github.com/go-json-experiment/json"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// DecodeVM decodes a stored VM and sets Meta.Revision to the key's ModRev.
// It decodes with go-json-experiment/json (26 allocations a placed VM
// against encoding/json's 60: BenchmarkDecodeVM; every server decodes
// each VM version once, three or more a VM placed), falling back to
// encoding/json for what only that one takes; the two give the same VM
// (TestDecodeVMMatchesEncodingJSON).
// Controllers use it on watch events of store.VMsPrefix.
func DecodeVM(kv store.KV) (*model.VM, error) {
	v := &model.VM{}
	if err := jsonv2.Unmarshal(kv.Value, v); err != nil {
		// what the faster decoder refuses and encoding/json takes
		// (invalid UTF-8, a member named twice) is decoded as before
		*v = model.VM{}
		if err := decode(kv, v); err != nil {
			return nil, err
		}
	}
	v.Revision = kv.ModRev
	return v, nil
}

// encodeVM encodes v without its revision (the revision is the key's).
func encodeVM(v *model.VM) []byte {
	rev := v.Revision
	v.Revision = 0
	b := encode(v)
	v.Revision = rev
	return b
}

// GetVM returns one VM (ErrNotFound when absent).
func (r *Repo) GetVM(ctx context.Context, project, name string) (*model.VM, error) {
	kv, err := r.st.Get(ctx, store.VMKey(project, name))
	if err != nil {
		return nil, fmt.Errorf("state: vm %s/%s: %w", project, name, err)
	}
	return DecodeVM(kv)
}

func vmPrefix(project string) string {
	if project == "" {
		return store.VMsPrefix
	}
	return store.VMProjectPrefix(project)
}

// ListVMs returns the VMs of one project ("" = every project) in key
// order and the store revision the listing was read at.
func (r *Repo) ListVMs(ctx context.Context, project string) ([]*model.VM, int64, error) {
	kvs, rev, err := r.st.List(ctx, vmPrefix(project))
	if err != nil {
		return nil, 0, fmt.Errorf("state: list vms: %w", err)
	}
	out := make([]*model.VM, 0, len(kvs))
	for _, kv := range kvs {
		v, err := DecodeVM(kv)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, v)
	}
	return out, rev, nil
}

// ListVMsRaw is ListVMs without decoding: each item is the stored JSON
// with its "revision" spliced in, ready to be written to a client. It is
// the fast path for listing tens of thousands of VMs.
func (r *Repo) ListVMsRaw(ctx context.Context, project string) ([]json.RawMessage, int64, error) {
	kvs, rev, err := r.st.List(ctx, vmPrefix(project))
	if err != nil {
		return nil, 0, fmt.Errorf("state: list vms: %w", err)
	}
	out := make([]json.RawMessage, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, withRevision(kv.Value, kv.ModRev))
	}
	return out, rev, nil
}

// VMJSON is a stored VM's JSON with its revision (the key's ModRev)
// spliced in, as ListVMsRaw answers it: ready to be written to a client.
func VMJSON(value []byte, modRev int64) json.RawMessage { return withRevision(value, modRev) }

// AppendVMJSON appends VMJSON(value, modRev) to dst, without an
// allocation of its own for a record this package wrote (lists write
// pages of them).
func AppendVMJSON(dst, value []byte, modRev int64) []byte {
	if len(value) < 2 || value[0] != '{' || bytes.Contains(value, []byte(`"revision":`)) {
		return append(dst, withRevision(value, modRev)...)
	}
	dst = append(dst, `{"revision":`...)
	dst = strconv.AppendInt(dst, modRev, 10)
	if len(value) > 2 {
		dst = append(dst, ',')
	}
	return append(dst, value[1:]...)
}

// withRevision returns the JSON object b with "revision":rev added.
// Objects written by this package carry no revision of their own
// (encodeVM); one written elsewhere with a stale one is re-encoded.
func withRevision(b []byte, rev int64) json.RawMessage {
	if len(b) < 2 || b[0] != '{' {
		return b
	}
	if bytes.Contains(b, []byte(`"revision":`)) {
		var v model.VM
		if json.Unmarshal(b, &v) == nil {
			v.Revision = rev
			return encode(&v)
		}
	}
	out := make([]byte, 0, len(b)+32)
	out = append(out, `{"revision":`...)
	out = strconv.AppendInt(out, rev, 10)
	if len(b) > 2 {
		out = append(out, ',')
	}
	return append(out, b[1:]...)
}

// usageAdd returns u with n VMs of the given demand added (n may be -1).
func usageAdd(u model.Usage, d model.Resources, n int) model.Usage {
	u.VCPUs += d.CPUs
	u.Memory += d.Memory
	u.Disk += d.Disk
	u.VMs += n
	u.VCPUs, u.VMs = max(u.VCPUs, 0), max(u.VMs, 0)
	u.Memory, u.Disk = max(u.Memory, 0), max(u.Disk, 0)
	return u
}

// CreateVM admits and stores one VM in phase pending. See CreateVMs.
func (r *Repo) CreateVM(ctx context.Context, vm *model.VM) (*model.VM, error) {
	out, err := r.CreateVMs(ctx, vm.Project, []*model.VM{vm})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// MaxBatch is the most VMs one CreateVMs call admits (a store transaction
// holds about two writes per VM and etcd caps a transaction at 128).
const MaxBatch = 50

// CreateVMs admits and stores VMs of one project, all or nothing, in one
// transaction guarded on the project, its usage key (at the revision read)
// and the absence of every VM key; the usage key is bumped in the same
// transaction and a vm.created event written per VM. Concurrent calls of
// one project share transactions (admit.go), each still all or nothing. Specs must already
// be validated. Every image the VMs name must be ready, and stay so until
// the transaction (guarded on its revision). Errors: ErrNotFound
// (project), ErrExists (a name is taken), ErrQuotaExceeded or
// ErrImageNotReady joined with a *model.FieldError, ErrContention.
func (r *Repo) CreateVMs(ctx context.Context, project string, vms []*model.VM) ([]*model.VM, error) {
	if len(vms) == 0 || len(vms) > MaxBatch {
		return nil, &model.FieldError{Field: "vms", Message: fmt.Sprintf("a batch holds 1 to %d VMs (got %d)", MaxBatch, len(vms))}
	}
	now := r.now()
	out := make([]*model.VM, len(vms))
	seen := map[string]bool{}
	for i, v := range vms {
		c := *v
		c.Project, c.Revision, c.DeletedAt = project, 0, nil
		c.UID = NewID()
		c.CreatedAt, c.UpdatedAt = now, now
		c.Status = model.VMStatus{Phase: model.PhasePending}
		if seen[c.Name] {
			return nil, fmt.Errorf("%w: VM %s/%s is named twice", ErrExists, project, c.Name)
		}
		seen[c.Name] = true
		out[i] = &c
	}
	return r.admit(ctx, project, &admitReq{vms: out, alone: hardGrouped(out), done: make(chan struct{})})
}

// UpdateVM applies fn to a VM and writes it with compare-and-swap,
// retrying (and calling fn again) on conflict. In the same transaction it
// keeps the invariants: a changed phase writes an event; a changed demand
// (vCPUs, memory, disks) re-checks and updates the project's usage
// (ErrQuotaExceeded); a changed Status.Host or demand of an assigned VM
// moves its host allocations. Name, project, UID and CreatedAt cannot
// change. fn may return ErrSkip to write nothing.
func (r *Repo) UpdateVM(ctx context.Context, project, name string, fn func(*model.VM) error) (*model.VM, error) {
	return r.UpdateVMFit(ctx, project, name, fn, nil)
}

// UpdateVMFit is UpdateVM for assignments: when the VM lands on a host
// (new Status.Host, or a bigger demand on the same host), fit is called
// with the VM as fn left it and the host's current allocation (the VM not
// yet added) and may refuse with an error, which is returned unchanged.
// The allocation it saw is guarded in the transaction, so two placements
// on one host can never both pass a check that only one fits.
//
// To assign a VM, the scheduler calls
//
//	UpdateVMFit(ctx, p, n, func(vm *model.VM) error {
//		vm.Status.Host, vm.Status.Phase = host, model.PhaseCreating
//		return nil
//	}, fits)
func (r *Repo) UpdateVMFit(ctx context.Context, project, name string, fn func(*model.VM) error,
	fit func(*model.VM, *model.Allocation) error) (*model.VM, error) {
	key := store.VMKey(project, name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		kv, err := r.st.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("state: vm %s/%s: %w", project, name, err)
		}
		old, err := DecodeVM(kv)
		if err != nil {
			return nil, err
		}
		nv, _ := DecodeVM(kv) // a deep copy for fn to change
		if err := fn(nv); err != nil {
			if errors.Is(err, ErrSkip) {
				return old, nil
			}
			return nil, err
		}
		now := r.now()
		nv.Name, nv.Project, nv.UID, nv.CreatedAt = old.Name, old.Project, old.UID, old.CreatedAt
		nv.UpdatedAt = now
		followOwner(old, nv)
		conds := []store.Cond{store.IfRev(key, old.Revision)}
		ops := []store.Op{store.Put(key, encodeVM(nv))}
		ops = append(ops, TransitionOps(old, nv, now)...)
		c2, o2, err := r.usageOps(ctx, old, nv)
		if err != nil {
			return nil, err
		}
		conds, ops = append(conds, c2...), append(ops, o2...)
		c3, o3, err := r.allocOps(ctx, old, nv, fit)
		if err != nil {
			return nil, err
		}
		conds, ops = append(conds, c3...), append(ops, o3...)
		ok, rev, err := r.txn(ctx, conds, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			nv.Revision = rev
			return nv, nil
		}
	}
	return nil, fmt.Errorf("%w: vm %s/%s", ErrContention, project, name)
}

// usageOps re-admits a changed demand against the project's quota.
func (r *Repo) usageOps(ctx context.Context, old, nv *model.VM) ([]store.Cond, []store.Op, error) {
	od, nd := old.Spec.Demand(), nv.Spec.Demand()
	if od == nd {
		return nil, nil, nil
	}
	p, err := r.GetProject(ctx, nv.Project)
	if err != nil {
		return nil, nil, err
	}
	u, urev, err := r.GetUsage(ctx, nv.Project)
	if err != nil {
		return nil, nil, err
	}
	d := nd.Sub(od)
	// only growth is checked: shrinking is always allowed, even over quota
	if err := p.Quota.Admit(u, max(d.CPUs, 0), max(d.Memory, 0), max(d.Disk, 0), 0); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrQuotaExceeded, err)
	}
	conds := []store.Cond{store.IfRev(store.ProjectKey(nv.Project), p.Revision), store.IfRev(store.UsageKey(nv.Project), urev)}
	return conds, []store.Op{store.Put(store.UsageKey(nv.Project), encode(usageAdd(u, d, 0)))}, nil
}

// allocOps moves the VM's hold between host allocations when its host or
// its demand changed.
func (r *Repo) allocOps(ctx context.Context, old, nv *model.VM, fit func(*model.VM, *model.Allocation) error) ([]store.Cond, []store.Op, error) {
	oh, nh := old.Status.Host, nv.Status.Host
	demandChanged := old.Spec.Demand() != nv.Spec.Demand() || VMReservation(&old.Spec) != VMReservation(&nv.Spec) ||
		old.Spec.Placement.AffinityGroup != nv.Spec.Placement.AffinityGroup ||
		old.Spec.Placement.IsolationDomain != nv.Spec.Placement.IsolationDomain
	if oh == nh && (nh == "" || !demandChanged) {
		return nil, nil, nil
	}
	allocs := map[string]*model.Allocation{}
	for _, h := range []string{oh, nh} {
		if h == "" || allocs[h] != nil {
			continue
		}
		a, err := r.GetAllocation(ctx, h)
		if err != nil {
			return nil, nil, err
		}
		allocs[h] = a
	}
	if oh != "" {
		AllocRelease(allocs[oh], old)
	}
	if nh != "" {
		a := allocs[nh]
		if fit != nil {
			if err := fit(nv, a); err != nil {
				return nil, nil, err
			}
		}
		AllocAdd(a, nv)
	}
	var conds []store.Cond
	var ops []store.Op
	now := r.now()
	for h, a := range allocs {
		a.Host, a.UpdatedAt = h, now
		conds = append(conds, store.IfRev(store.AllocKey(h), a.Revision))
		ops = append(ops, store.Put(store.AllocKey(h), encode(a)))
	}
	return conds, ops, nil
}

// FinishDeleteVM removes a VM for good in one transaction: the VM key,
// its placement's explanation, its share of the project's usage, its hold on its host's allocation,
// and a vm.deleted event. A VM already gone is not an error.
func (r *Repo) FinishDeleteVM(ctx context.Context, project, name string) error {
	key := store.VMKey(project, name)
	unlock := r.lock(store.UsageKey(project))
	defer unlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
		kv, err := r.st.Get(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("state: vm %s/%s: %w", project, name, err)
		}
		vm, err := DecodeVM(kv)
		if err != nil {
			return err
		}
		now := r.now()
		conds := []store.Cond{store.IfRev(key, vm.Revision)}
		ops := []store.Op{store.Delete(key), store.Delete(store.ExplanationKey(project, name)), EventOp(model.Event{Time: now, Kind: EventVMDeleted, Object: VMObject(project, name),
			Project: project, From: string(vm.Status.Phase), Message: "VM " + name + " deleted"})}
		snaps, err := r.snapshotDeleteOps(ctx, project, name)
		if err != nil {
			return err
		}
		ops = append(ops, snaps...)
		u, urev, err := r.GetUsage(ctx, project)
		if err != nil {
			return err
		}
		conds = append(conds, store.IfRev(store.UsageKey(project), urev))
		if urev != 0 {
			ops = append(ops, store.Put(store.UsageKey(project), encode(usageAdd(u, model.Resources{}.Sub(vm.Spec.Demand()), -1))))
		}
		if h := vm.Status.Host; h != "" {
			a, err := r.GetAllocation(ctx, h)
			if err != nil {
				return err
			}
			if a.VMs[vm.Key()] {
				AllocRelease(a, vm)
				a.UpdatedAt = now
				conds = append(conds, store.IfRev(store.AllocKey(h), a.Revision))
				ops = append(ops, store.Put(store.AllocKey(h), encode(a)))
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
	return fmt.Errorf("%w: deleting vm %s/%s", ErrContention, project, name)
}

// followOwner moves a VM's disk owner record (set by an HA restart) to
// the host a placement or a migration just gave the VM, with the next
// epoch. The record names the one host allowed to start the VM (the
// agent asks before it starts it, docs/ha.md): left on the old host, it
// kept the VM's new host from starting it again after its agent or the
// host restarted (test/chaos found VMs down for good after an HA restart
// and a later migration).
func followOwner(old, nv *model.VM) {
	o := nv.Status.Owner
	if o == nil || nv.Status.Host == "" || nv.Status.Host == old.Status.Host || nv.Status.Host == o.Host {
		return
	}
	nv.Status.Owner = &model.DiskOwner{Host: nv.Status.Host, Epoch: o.Epoch + 1}
}
