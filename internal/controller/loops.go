package controller

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// maxLoopGap is the longest a loop that follows watch events waits
// between two passes when events keep coming: a burst (1,000 VMs
// created) costs the loops that do not place a pass every gap, not one
// per event. Scheduling has no gap.
const maxLoopGap = 100 * time.Millisecond

// haTick is how often host HA looks at the renewals even when nothing
// changed. It is a safety net: the loop wakes on watch events (an alive
// key gone, a host record renewed) and, by its timer, at the earliest
// deadline of the hosts (a host due to be suspect, failed or fenced, or
// its fence command), not at the next tick. A variable for the tests.
var haTick = time.Second

// loop is one control loop of a term: its own goroutine and its own work
// queue, a coalescing signal of depth one fed by the watch cache (the
// prefixes it follows) and by a resync ticker. A slow pass delays only
// its own loop.
type loop struct {
	name     string
	run      func(context.Context) error
	prefixes []string
	every    time.Duration
	gap      time.Duration
	kick     chan struct{}
	// watch are prefixes the cache does not reflect: a watch of its own
	// pokes the loop on their changes (lbloops.go).
	watch []string
	// wake, when set, answers after each pass how long until the loop's
	// next deadline (0: none); a timer runs it then, without the gap.
	wake func() time.Duration
	// urgent runs the loop at once, without the gap (a fence command's
	// outcome: a host to fence now).
	urgent chan struct{}
}

// loops lists the term's control loops. Migrations run beside them
// (migrate.go), with their own watches.
func (r *reconciler) loops() []*loop {
	cfg := &r.m.cfg
	gap := min(maxLoopGap, cfg.ResyncInterval)
	second := min(time.Second, cfg.ResyncInterval)
	ls := []*loop{
		{name: "scheduling", run: r.scheduling, every: cfg.ResyncInterval,
			prefixes: []string{store.VMsPrefix, store.HostsPrefix, store.AllocPrefix, store.AlivePrefix, store.PolicyKey}},
		{name: "liveness", run: r.haPass, every: min(haTick, cfg.ResyncInterval), gap: gap, wake: r.haWake,
			prefixes: []string{store.HostsPrefix, store.AlivePrefix, store.VMsPrefix, store.PolicyKey}},
		{name: "cleanup", run: r.cleanup, every: cfg.ResyncInterval, gap: gap, prefixes: []string{store.VMsPrefix, store.HostsPrefix}},
		{name: "energy", run: r.energyStep, every: second},
		{name: "power", run: r.powerStep, every: cfg.ResyncInterval, gap: gap,
			prefixes: []string{store.VMsPrefix, store.HostsPrefix, store.AllocPrefix}},
		{name: "balancer", run: r.balanceRound, every: second},
		{name: "compaction", run: r.compactEvents, every: cfg.ResyncInterval},
	}
	for _, task := range cfg.Tasks {
		run, every := task.New(), task.Every
		if every <= 0 {
			every = cfg.ResyncInterval
		}
		ls = append(ls, &loop{name: task.Name, every: every, run: func(ctx context.Context) error { return run(ctx, r.repo.Store()) }})
	}
	ls = append(ls, r.lbLoops(gap, second)...)
	for _, l := range ls {
		l.kick, l.urgent = make(chan struct{}, 1), make(chan struct{}, 1)
		r.c.subscribe(l.kick, l.prefixes...)
		if l.name == "liveness" {
			r.ha.fence.kick = l.urgent // fence commands' outcomes
		}
	}
	return ls
}

// scheduling repairs the allocations once per term, then places.
func (r *reconciler) scheduling(ctx context.Context) error {
	if err := r.repairOnce(ctx); err != nil {
		r.m.cfg.ReconcileErrors("repair")
		r.m.log.Warn("reconcile failed", "controller", "repair", "err", err)
		r.t.check(err)
		return nil
	}
	return r.schedule(ctx)
}

// runControllers runs one term: the watch cache's reflectors, then every
// control loop and the migration controller, each on its own goroutine,
// until ctx ends, a reflector fails, or a write finds the term over.
func (m *Manager) runControllers(ctx context.Context, t *term) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait
	c := newCache(m.log)
	c.usage, c.dec = m.cfg.Usage, m.cfg.Decoder
	r := newReconciler(m, t, c)
	loops := r.loops()
	srcs := c.sources()
	synced := make(chan struct{})
	var pending atomic.Int32
	pending.Store(int32(len(srcs)))
	errc := make(chan error, len(srcs))
	for _, src := range srcs {
		wg.Go(func() {
			err := c.reflect(ctx, t.repo.Store(), src, func() {
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
	for _, l := range loops {
		wg.Go(func() { r.runLoop(ctx, l) })
		for _, p := range l.watch {
			wg.Go(func() { r.watchPrefix(ctx, p, l.kick) })
		}
	}
	x := newMigrator(m, t, r.gate)
	wg.Go(func() { x.run(ctx) })
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	case <-t.lost:
		return fmt.Errorf("controller: %w", state.ErrNotLeader)
	}
}

// runLoop runs one loop until ctx ends. Failures are counted and logged
// and retried on the next pass; one that says the term is over ends it.
func (r *reconciler) runLoop(ctx context.Context, l *loop) {
	tick := time.NewTicker(l.every)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var last time.Time
	due := false // woken by the timer: a deadline, no gap
	for {
		if l.gap > 0 && !due {
			if wait := l.gap - time.Since(last); wait > 0 && !sleep(ctx, wait) {
				return
			}
		}
		last = time.Now()
		if err := l.run(ctx); err != nil && ctx.Err() == nil {
			r.m.cfg.ReconcileErrors(l.name)
			r.m.log.Warn("reconcile failed", "controller", l.name, "err", err)
			r.t.check(err)
		}
		timer.Stop()
		if l.wake != nil {
			if d := l.wake(); d > 0 {
				timer.Reset(d)
			}
		}
		due = false
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		case <-tick.C:
		case <-timer.C:
			due = true
		case <-l.urgent:
			due = true
		}
	}
}
