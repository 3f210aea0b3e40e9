package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// reconciler runs the controllers of one leadership term over one cache.
type reconciler struct {
	m   *Manager
	t   *term
	c   *cache
	st  store.Store
	now func() time.Time

	// failed remembers VMs that fit nowhere: not retried until their
	// record or the capacity generation changes.
	failed map[string]failMemo
	// repaired is set once allocations were checked against the VMs.
	repaired    bool
	lastCompact time.Time
	// g is the balancer, power and energy controllers' memory (green.go).
	g *greenState
}

type failMemo struct {
	rev int64
	gen uint64
}

func newReconciler(m *Manager, t *term, c *cache) *reconciler {
	return &reconciler{m: m, t: t, c: c, st: m.cfg.Store, now: m.cfg.Clock, failed: map[string]failMemo{}}
}

// runControllers fills a cache from watches and runs reconcile passes on
// every change and every ResyncInterval, until ctx ends.
func (m *Manager) runControllers(ctx context.Context, t *term) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := newCache(m.log)
	srcs := c.sources()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	synced := make(chan struct{})
	var pending atomic.Int32
	pending.Store(int32(len(srcs)))
	errc := make(chan error, len(srcs))
	for _, src := range srcs {
		wg.Go(func() {
			err := c.reflect(ctx, m.cfg.Store, src, func() {
				if pending.Add(-1) == 0 {
					close(synced)
				}
			})
			if ctx.Err() == nil {
				errc <- fmt.Errorf("controller: reflect %s: %w", src.prefix, err)
			}
		})
	}
	select {
	case <-synced:
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
	r := newReconciler(m, t, c)
	wg.Go(func() { m.runMigrations(ctx, t) })
	tick := time.NewTicker(m.cfg.ResyncInterval)
	defer tick.Stop()
	for {
		r.pass(ctx)
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case <-c.kick:
		case <-tick.C:
		}
	}
}

// pass runs every controller once. Failures are counted and logged and
// retried on the next pass; they never stop the loop.
func (r *reconciler) pass(ctx context.Context) {
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"repair", r.repairOnce},
		{"liveness", r.liveness},
		{"scheduling", r.schedule},
		{"cleanup", r.cleanup},
		{"energy", r.energyStep},
		{"power", r.powerStep},
		{"balancer", r.balanceRound},
		{"compaction", r.compactEvents},
	}
	for _, s := range steps {
		if ctx.Err() != nil {
			return
		}
		if err := s.run(ctx); err != nil && ctx.Err() == nil {
			r.m.cfg.ReconcileErrors(s.name)
			r.m.log.Warn("reconcile failed", "controller", s.name, "err", err)
		}
	}
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
	allocs, _, err := r.m.repo.ListAllocations(ctx)
	if err != nil {
		return err
	}
	vms, _, err := r.m.repo.ListVMs(ctx, "")
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
		ok, rev, err := r.st.Txn(ctx, r.t.guard(store.IfRev(store.AllocKey(h), have.Revision)),
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
