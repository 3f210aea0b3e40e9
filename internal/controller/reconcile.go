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
	sv       *schedView // the scheduling loop's view across passes (pipeline.go)
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
// Allocations are read before the VMs and every rewrite is guarded on the
// allocation's revision: any change of a VM's host after the allocations
// were read also rewrote that allocation (state keeps them in one
// transaction), so the guard fails and the repair is retried.
func (r *reconciler) repairOnce(ctx context.Context) error {
	if r.repaired {
		return nil
	}
	allocs, _, err := r.repo.ListAllocations(ctx)
	if err != nil {
		return err
	}
	vms, _, err := r.repo.ListVMs(ctx, "")
	if err != nil {
		return err
	}
	want := expectedAllocs(vms)
	if err := r.addMigrationHolds(ctx, want, vms); err != nil {
		return err
	}
	hosts := sortedKeys(want)
	for _, h := range sortedKeys(allocs) {
		if _, ok := want[h]; !ok {
			hosts = append(hosts, h)
		}
	}
	conflicts := 0
	for _, h := range hosts {
		have := model.Allocation{Host: h}
		if a := allocs[h]; a != nil {
			have = *a
		}
		w := want[h]
		if sameAlloc(have, w) {
			continue
		}
		w.Host, w.UpdatedAt = h, r.now()
		ok, rev, err := r.repo.Txn(ctx, []store.Cond{store.IfRev(store.AllocKey(h), have.Revision)},
			[]store.Op{store.Put(store.AllocKey(h), mustJSON(w))})
		if err != nil {
			return fmt.Errorf("controller: repair allocation of %s: %w", h, err)
		}
		if !ok {
			conflicts++
			continue
		}
		r.m.log.Warn("repaired allocation", "host", h, "was", have.Used, "vms_was", len(have.VMs), "now", w.Used, "vms", len(w.VMs))
		r.c.putAlloc(w, rev)
	}
	if conflicts > 0 {
		return fmt.Errorf("%w: %d allocations changed while being repaired", errNotRepaired, conflicts)
	}
	r.repaired = true
	return nil
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
