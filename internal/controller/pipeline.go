package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Placement at thousands of VMs a second (docs/scale.md): the scheduling
// loop keeps one view of the cluster across passes (schedView, updated
// from the cache's journal instead of rebuilt), decides the pending VMs
// one after the other on it, and hands them to the gate in groups: one
// transaction commits up to a group's worth of placements, each still
// guarded on its VM's revision, every touched allocation's revision, the
// policy and the term. While the gate commits one group the loop decides
// the next (pipelining): the view carries the placements in flight as if
// committed, and hosts whose charges did not commit are re-read from the
// cache at the next pass.

// groupOps bounds a group: its VMs, their explanations (each at its own
// key), their events and the allocations of the hosts they touch must
// fit in one transaction (the store's cap,
// state.Repo.MaxOps: etcd's default 128, 512 on our embedded member),
// with room for the guards of the policy and the term.
func (r *reconciler) groupOps() int { return r.repo.MaxOps() - 4 }

// groupBytes bounds a group's bytes, well under etcd's request limit
// (1.5 MiB by default): a VM record is a few KiB, but its cloud-init
// seed may add up to 64 KiB of user data and its keys (vmTxnBytes).
const groupBytes = 1 << 20

// vmTxnBytes is about what placing vm adds to a transaction: the record,
// its explanation and its event (a few KiB), its cloud-init seed (user
// data is stored sealed, in base64: a third more than its bytes).
func vmTxnBytes(vm *model.VM) int {
	return 4<<10 + vm.Spec.CloudInit.StoredBytes()
}

// opsPerPlacement is what one placement writes besides its host's
// allocation: the VM's record, its explanation, its event.
const opsPerPlacement = 3

// schedView is the scheduling loop's view across passes.
type schedView struct {
	snap  *Snapshot
	gen   uint64
	index map[string]int // host name → index in snap.Hosts
	// stale names hosts whose allocations in snap carry charges that were
	// not committed: the next sync re-reads them from the cache.
	stale map[string]bool
}

// maxChanged bounds Snapshot.Changed: past it the view is rebuilt with a
// new epoch, so that the list does not grow for ever.
const maxChanged = 100_000

// syncView brings the view up to date with the cache: the allocations
// the journal names are applied; a new, removed or reshaped host, a new
// policy or a re-list rebuilds it.
func (r *reconciler) syncView() (*Snapshot, uint64) {
	c := r.c
	c.mu.Lock()
	dirty, all := c.schedJ.take()
	sv := r.sv
	rebuild := sv == nil || all || c.polRev != sv.snap.PolicyRev || len(sv.snap.Changed) > maxChanged
	type change struct {
		name string
		a    model.Allocation
	}
	var changes []change
	if !rebuild {
		for name := range mergeKeys(dirty, sv.stale) {
			h := c.hosts[name]
			i, ok := sv.index[name]
			if h == nil || !ok || !sameShape(&sv.snap.Hosts[i], h) {
				rebuild = true
				break
			}
			a := c.allocs[name]
			a.Host = name
			changes = append(changes, change{name, a})
		}
	}
	gen := c.gen
	c.mu.Unlock()
	if rebuild {
		snap, g := c.snapshot()
		snap.Epoch = r.m.epochs.Add(1)
		sv = &schedView{snap: snap, gen: g, index: make(map[string]int, len(snap.Hosts)), stale: map[string]bool{}}
		for i := range snap.Hosts {
			sv.index[snap.Hosts[i].Name] = i
		}
		r.sv = sv
	} else {
		sort.Slice(changes, func(i, j int) bool { return changes[i].name < changes[j].name })
		for _, ch := range changes {
			sv.snap.setAlloc(ch.a)
		}
		sv.stale, sv.gen = map[string]bool{}, gen
	}
	sv.snap.Now = r.now()
	return sv.snap, sv.gen
}

func mergeKeys(a, b map[string]bool) map[string]bool {
	if len(b) == 0 {
		return a
	}
	out := make(map[string]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// pipeline decides pending VMs on the view and commits them in groups
// through the gate. A group goes to the committer as soon as the
// committer is idle (at a low rate every VM commits at once, as alone),
// else it grows while the previous group commits, up to groupOps.
type pipeline struct {
	r     *reconciler
	ctx   context.Context
	snap  *Snapshot
	gen   uint64
	group []Placement
	hosts map[string]bool
	bytes int              // the group's, by vmTxnBytes
	work  chan []Placement // unbuffered: a send succeeds only when the committer waits
	done  chan struct{}

	mu     sync.Mutex // the committer's results
	errs   []error
	lost   []*model.VM // members of groups whose guards failed
	placed []string    // keys of the VMs committed
	stale  map[string]bool
}

func (r *reconciler) newPipeline(ctx context.Context, snap *Snapshot, gen uint64) *pipeline {
	p := &pipeline{r: r, ctx: ctx, snap: snap, gen: gen, hosts: map[string]bool{},
		work: make(chan []Placement), done: make(chan struct{}), stale: map[string]bool{}}
	go func() {
		defer close(p.done)
		for ps := range p.work {
			p.commit(ps)
		}
	}()
	return p
}

// add decides one VM: a VM that fits nowhere is recorded as such; a
// placement is charged on the view and joins the group.
func (p *pipeline) add(vm *model.VM) error {
	r, snap := p.r, p.snap
	host, expl := r.m.cfg.Placer.Place(snap, vm)
	if expl == nil {
		expl = &model.Explanation{Time: snap.Now, Hosts: len(snap.Hosts), Chosen: host}
	}
	if host == "" {
		return r.unschedulable(p.ctx, vm, expl, p.gen)
	}
	if _, ok := r.sv.index[host]; !ok {
		return fmt.Errorf("%w: %s for VM %s: no such host", ErrPlacerBroke, host, vm.Key())
	}
	snap.setAlloc(allocAdd(snap.Allocs[host], host, vm))
	p.group = append(p.group, Placement{VM: vm, Host: host, Explanation: expl})
	p.hosts[host] = true
	p.bytes += vmTxnBytes(vm)
	if opsPerPlacement*(len(p.group)+1)+len(p.hosts)+1 > r.groupOps() || p.bytes+64<<10+4<<10 > groupBytes {
		p.flush() // the next VM might not fit
		return nil
	}
	select { // hand the group over if the committer is idle
	case p.work <- p.group:
		p.group, p.hosts, p.bytes = nil, map[string]bool{}, 0
	default:
	}
	return nil
}

// flush hands the group to the committer, waiting until it takes it.
func (p *pipeline) flush() {
	if len(p.group) == 0 {
		return
	}
	p.work <- p.group
	p.group, p.hosts, p.bytes = nil, map[string]bool{}, 0
}

// close commits what is left and waits for the committer. It returns
// the VMs whose group lost its guards (to decide again) and the errors;
// hosts whose charges did not commit are re-read at the next sync.
func (p *pipeline) close() ([]*model.VM, error) {
	p.flush()
	close(p.work)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	for h := range p.stale {
		p.r.sv.stale[h] = true
	}
	for _, k := range p.placed {
		delete(p.r.failed, k)
	}
	return p.lost, errors.Join(p.errs...)
}

// commit has the gate commit one group. A member the gate refuses is an
// error (a faulty Placer, or a view older than a host's cordon) and stays
// pending; when a guard failed nothing was written and every member is
// decided again.
func (p *pipeline) commit(ps []Placement) {
	r := p.r
	t0 := time.Now()
	vms, refused, ok, err := r.gate.placeGroup(p.ctx, ps)
	r.m.cfg.GateCommitted(len(ps), time.Since(t0))
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.errs = append(p.errs, err)
	}
	p.errs = append(p.errs, refused...)
	if err == nil && !ok {
		r.m.log.Debug("placement lost its compare-and-swap, re-reading", "vm", ps[0].VM.Key(), "group", len(ps))
		for _, pl := range ps {
			p.lost = append(p.lost, pl.VM)
		}
	}
	placed := make(map[string]bool, len(vms))
	for _, v := range vms {
		placed[v.Key()] = true
		p.placed = append(p.placed, v.Key())
		r.m.log.Debug("placed VM", "vm", v.Key(), "host", v.Status.Host, "group", len(ps))
	}
	for _, pl := range ps {
		if !placed[pl.VM.Key()] {
			p.stale[pl.Host] = true
		}
	}
}

// reread returns the VMs of vms that still need placement, as stored now
// (after a lost guard the cache may not have the change that beat us).
func (r *reconciler) reread(ctx context.Context, vms []*model.VM) ([]*model.VM, error) {
	var out []*model.VM
	for _, vm := range vms {
		fresh, err := r.repo.GetVM(ctx, vm.Project, vm.Name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		if needsPlacement(fresh) {
			out = append(out, fresh)
		}
	}
	return out, nil
}
