package controller

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// deposeSetup stores, through the test's own (unfenced) repository, a
// cluster in which every controller has something to write: a pending
// VM, a ready host whose agent is gone, a deleted unplaced VM, a drained
// host, a standby host a waiting VM needs, events to compact.
func deposeSetup(e *env) {
	e.t.Helper()
	ctx := context.Background()
	e.addHost("h1", 4, 8*model.GiB, nil)
	if _, err := e.repo.UpsertHost(ctx, "lost", func(h *model.Host, _ bool) error {
		h.State, h.Capacity, h.LastSeen = model.HostReady, model.Resources{CPUs: 1, Memory: model.GiB, Disk: model.TiB}, e.clock.Now().Add(-time.Hour)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.repo.UpsertHost(ctx, "drained", func(h *model.Host, _ bool) error {
		h.State, h.Capacity, h.LastSeen = model.HostMaintenance, model.Resources{CPUs: 1, Memory: model.GiB, Disk: model.TiB}, e.clock.Now()
		h.Drain = &model.HostDrain{MaxConcurrent: 1, StartedAt: e.clock.Now()}
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.repo.UpsertHost(ctx, "sleepy", func(h *model.Host, _ bool) error {
		h.State, h.Capacity, h.LastSeen = model.HostStandby, model.Resources{CPUs: 64, Memory: 512 * model.GiB, Disk: model.TiB}, e.clock.Now()
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	e.createVM("first", 1, model.GiB)
	e.createVM("huge", 32, 256*model.GiB) // fits only on sleepy: wakes it
	e.createVM("doomed", 1, model.GiB)
	e.markDeleted("doomed")
}

// TestDeposedLeaderWritesNothing runs every controller of a term whose
// leader key was taken over after the term read its view (a leader
// deposed mid-pass that has not noticed yet): nothing may change in the
// store. Before issue 11, liveness, cleanup, drain bookkeeping and the
// power controller wrote through paths without the leadership guard.
func TestDeposedLeaderWritesNothing(t *testing.T) {
	e := newEnv(t)
	deposeSetup(e)
	ctx := context.Background()
	ok, rev, err := e.st.Txn(ctx, []store.Cond{store.IfAbsent(store.LeaderKey)}, []store.Op{store.Put(store.LeaderKey, []byte("a"))})
	if err != nil || !ok {
		t.Fatalf("claim leader key: %v %v", ok, err)
	}
	cfg := e.config("a", nil)
	cfg.Placer = NewSchedulerPlacer()
	cfg.MaxEvents = 1
	m := New(cfg)
	g := &greenEnv{env: e, power: &fakePower{}}
	g.r = newReconciler(m, m.newTerm(store.IfRev(store.LeaderKey, rev)), newCache(m.log))
	g.sync()
	// Another server takes over while this one is mid-pass.
	if _, _, err := e.st.Txn(ctx, nil, []store.Op{store.Put(store.LeaderKey, []byte("b"))}); err != nil {
		t.Fatal(err)
	}
	_, before, err := e.st.List(ctx, store.LeaderKey)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Step(time.Minute)
	for _, step := range deposedSteps(g) {
		if err := step.run(ctx); err != nil {
			t.Logf("%s: %v", step.name, err)
		}
		if _, now, _ := e.st.List(ctx, store.LeaderKey); now != before {
			t.Errorf("a deposed leader's %s wrote to the store (revision %d → %d)", step.name, before, now)
			before = now
		}
	}
}

// TestDeposedManagerWritesNothing deposes a running leader in the middle
// of a placement, behind a partition that hides the takeover from it:
// from then on none of its transactions may land, and it steps down.
func TestDeposedManagerWritesNothing(t *testing.T) {
	e := newEnv(t)
	deaf := &deafStore{Store: e.st}
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	sp := NewSchedulerPlacer()
	cfg := e.config("a", deaf)
	cfg.LeaseTTL = time.Hour
	cfg.Placer = PlacerFunc(func(s *Snapshot, vm *model.VM) (string, *model.Explanation) {
		once.Do(func() { close(entered); <-release })
		return sp.Place(s, vm)
	})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	m, _ := e.start(cfg)
	eventually(t, "a leads", m.IsLeader)
	e.addHost("h0", 4, 8*model.GiB, nil)
	e.createVM("zero", 1, model.GiB)
	<-entered // mid-pass: the placement is decided, not yet committed
	deaf.deposed.Store(true)
	if _, _, err := e.st.Txn(context.Background(), nil, []store.Op{store.Put(store.LeaderKey, []byte("b"))}); err != nil {
		t.Fatal(err)
	}
	deposeSetup(e)
	close(release)
	eventually(t, "a write attempted and the leader stepped down or wrote", func() bool {
		return deaf.tried.Load() > 0 && (!m.IsLeader() || len(deaf.landed()) > 0)
	})
	time.Sleep(50 * time.Millisecond) // let other loops try their luck
	if w := deaf.landed(); len(w) > 0 {
		t.Fatalf("a deposed leader wrote %d keys: %s", len(w), strings.Join(w, ", "))
	}
}

// deafStore is the store as seen from behind a partition: once deposed,
// watch events of the leader key never arrive, and every transaction
// that lands is recorded.
type deafStore struct {
	store.Store
	deposed atomic.Bool
	tried   atomic.Int64
	mu      sync.Mutex
	wrote   []string
}

func (d *deafStore) Watch(ctx context.Context, prefix string, from int64) <-chan store.WatchResponse {
	in := d.Store.Watch(ctx, prefix, from)
	out := make(chan store.WatchResponse)
	go func() {
		defer close(out)
		for resp := range in {
			if d.deposed.Load() {
				evs := resp.Events[:0:0]
				for _, ev := range resp.Events {
					if ev.KV.Key != store.LeaderKey {
						evs = append(evs, ev)
					}
				}
				if resp.Err == nil && len(evs) == 0 {
					continue
				}
				resp.Events = evs
			}
			select {
			case out <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (d *deafStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	ok, rev, err := d.Store.Txn(ctx, conds, ops)
	if d.deposed.Load() && len(ops) > 0 {
		d.tried.Add(1)
		if ok && err == nil {
			d.mu.Lock()
			for _, op := range ops {
				d.wrote = append(d.wrote, op.Key)
			}
			d.mu.Unlock()
		}
	}
	return ok, rev, err
}

func (d *deafStore) landed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.wrote...)
}
