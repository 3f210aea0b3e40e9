package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// reconciler holds the controllers of one leadership term over one
// cache: the loops that run them (loops.go) call its methods, each loop
// on its own goroutine. Every field below the shared ones belongs to one
// loop only.
type reconciler struct {
	m    *Manager
	t    *term
	c    *cache
	repo *state.Repo // the term's: every write is fenced
	gate *gate
	now  func() time.Time

	// scheduling loop: failed remembers VMs that fit nowhere, not retried
	// until their record or the capacity generation changes; repaired is
	// set once allocations were checked against the VMs.
	failed   map[string]failMemo
	repaired bool
	// repairChecked names the hosts the repair found consistent or
	// rewrote this term; repairPasses counts its passes that left hosts.
	repairChecked map[string]bool
	repairPasses  int
	sv            *schedView // the scheduling loop's view across passes (pipeline.go)
	// compaction loop
	lastCompact time.Time
	// balancer, power and energy loops (green.go)
	bal *balanceState
	pow *powerState
	nrg *energyState
	// powerPlacer answers the power controller's "where would a waiting
	// VM go": its own, so as not to disturb the scheduling loop's.
	powerPlacer Placer
	// host HA loop (ha.go)
	ha *haState
}

type failMemo struct {
	rev int64
	gen uint64
}

func newReconciler(m *Manager, t *term, c *cache) *reconciler {
	r := &reconciler{m: m, t: t, c: c, repo: t.repo, now: m.cfg.Clock, failed: map[string]failMemo{},
		bal: &balanceState{history: map[string][]float64{}}, pow: &powerState{emptySince: map[string]time.Time{}},
		nrg: &energyState{lastUtil: map[string]float64{}}, powerPlacer: m.cfg.Placer, ha: newHAState(m.cfg.Clock())}
	if sp, ok := m.cfg.Placer.(*SchedulerPlacer); ok {
		r.powerPlacer = sp.fork()
	}
	r.gate = newGate(t.repo, c, m.log)
	r.gate.audit = m.cfg.Audit
	return r
}

// errNotRepaired stops scheduling until allocations are known good.
var errNotRepaired = errors.New("controller: allocations not yet checked against VMs")

// repairOnce recomputes every host's allocation from the VMs (the source
// of truth) at the start of a term, and rewrites those that disagree. A
// crash between any two steps of anyone's write is thus harmless.
//
// It reads the controllers' cache, not the store (which would list and
// decode every VM again: 140 MiB live at 100,000 VMs, docs/scale.md).
// Each rewrite is guarded on the allocation's revision as cached, and a
// host is decided only when the cached VMs are complete through that
// revision (cache.through): any change of a VM's host after it also
// rewrote that allocation (state keeps them in one transaction), so the
// guard fails, the host is left, and the repair is tried again. A host
// whose allocation is newer than the cached VMs (its VM event not in
// yet, or a write of the allocation alone) is left for the next pass;
// so is a host with no cached allocation while the allocations are
// complete through a later revision than the VMs (it may have been
// deleted after the VMs moved off it, which the cache has not seen).
//
// A host found consistent, or rewritten, stays checked for the term:
// every later writer changes the allocation and the VMs together, which
// keeps them consistent. After repairCachePasses passes that left hosts
// (the cached VMs stay behind the allocations while no VM changes), the
// hosts left are checked from the store: the allocations listed first,
// then the VMs (every change after the first listing rewrote an
// allocation: its guard fails).
func (r *reconciler) repairOnce(ctx context.Context) error {
	if r.repaired {
		return nil
	}
	if r.repairChecked == nil {
		r.repairChecked = map[string]bool{}
	}
	var (
		v   repairView
		err error
	)
	if r.repairPasses < repairCachePasses {
		v = r.c.repairView()
	} else if v, err = r.repairFromStore(ctx); err != nil {
		return err
	}
	left, err := r.repairHosts(ctx, v)
	if err != nil {
		return err
	}
	if left > 0 {
		r.repairPasses++
		return fmt.Errorf("%w: %d allocations changed while being repaired, or newer than the VMs read", errNotRepaired, left)
	}
	r.repaired, r.repairChecked = true, nil
	return nil
}

// repairCachePasses is how many passes the repair reads the cache before
// it reads the hosts left from the store.
const repairCachePasses = 5

// repairView is what the repair decides from: the allocations and the
// VMs, and the revisions through which each is complete in the cache;
// stored says they were read from the store, the VMs after the
// allocations (every host can be decided).
type repairView struct {
	allocs                    map[string]model.Allocation
	vms                       []*model.VM
	vmsThrough, allocsThrough int64
	stored                    bool
}

// repairView returns the cached allocations and VMs at one instant. The
// map is the caller's; the VMs are shared (immutable).
func (c *cache) repairView() repairView {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := repairView{allocs: make(map[string]model.Allocation, len(c.allocs)), vms: make([]*model.VM, 0, len(c.vms)),
		vmsThrough: c.through[store.VMsPrefix], allocsThrough: c.through[store.AllocPrefix]}
	for h, a := range c.allocs {
		v.allocs[h] = a
	}
	for _, vm := range c.vms {
		v.vms = append(v.vms, vm)
	}
	return v
}

// repairFromStore lists the allocations, then the VMs, from the store.
func (r *reconciler) repairFromStore(ctx context.Context) (repairView, error) {
	stored, _, err := r.repo.ListAllocations(ctx)
	if err != nil {
		return repairView{}, err
	}
	vms, _, err := r.repo.ListVMs(ctx, "")
	if err != nil {
		return repairView{}, err
	}
	v := repairView{allocs: make(map[string]model.Allocation, len(stored)), vms: vms, stored: true}
	for h, a := range stored {
		v.allocs[h] = *a
	}
	return v, nil
}

// decidable says whether the VMs of v are complete through what the
// allocation of host h (have; ok false: none) counts.
func (v repairView) decidable(have model.Allocation, ok bool) bool {
	if v.stored {
		return true
	}
	if !ok {
		return v.allocsThrough <= v.vmsThrough
	}
	return have.Revision <= v.vmsThrough
}

// repairHosts checks the hosts not yet checked this term against v's
// VMs and rewrites the allocations that disagree, each guarded on its
// revision in v. It returns how many hosts are left for another pass.
func (r *reconciler) repairHosts(ctx context.Context, v repairView) (int, error) {
	want := expectedAllocs(v.vms)
	if err := r.addMigrationHolds(ctx, want, v.vms); err != nil {
		return 0, err
	}
	hosts := sortedKeys(want)
	for _, h := range sortedKeys(v.allocs) {
		if _, ok := want[h]; !ok {
			hosts = append(hosts, h)
		}
	}
	left := 0
	for _, h := range hosts {
		if r.repairChecked[h] {
			continue
		}
		have, ok := v.allocs[h]
		if !v.decidable(have, ok) {
			left++ // the VMs read may miss what this allocation counts
			continue
		}
		if !ok {
			have = model.Allocation{Host: h}
		}
		w := want[h]
		if sameAlloc(have, w) {
			r.repairChecked[h] = true
			continue
		}
		w.Host, w.UpdatedAt = h, r.now()
		ok, rev, err := r.repo.Txn(ctx, []store.Cond{store.IfRev(store.AllocKey(h), have.Revision)},
			[]store.Op{store.Put(store.AllocKey(h), mustJSON(w))})
		if err != nil {
			return 0, fmt.Errorf("controller: repair allocation of %s: %w", h, err)
		}
		if !ok {
			left++
			continue
		}
		r.repairChecked[h] = true
		r.m.log.Warn("repaired allocation", "host", h, "was", have.Used, "vms_was", len(have.VMs), "now", w.Used, "vms", len(w.VMs))
		r.c.putAlloc(w, rev)
	}
	return left, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// model types are plain data
		panic(fmt.Sprintf("controller: encode %T: %v", v, err))
	}
	return b
}

// encodeVM encodes a VM without its revision (the key's ModRev is).
func encodeVM(vm *model.VM) []byte {
	c := *vm
	c.Revision = 0
	return mustJSON(&c)
}
