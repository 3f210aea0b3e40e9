package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// fakeClock is a clock that moves only when stepped.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is one store with a fake clock and a repository over it.
type env struct {
	t     testing.TB
	clock *fakeClock
	st    *memstore.Store
	repo  *state.Repo
	// hostTTL is the lease TTL (seconds) of hosts added by addHost.
	hostTTL int64
}

func newEnv(t testing.TB) *env {
	t.Helper()
	clock := newFakeClock()
	st := memstore.New(memstore.WithClock(clock.Now))
	t.Cleanup(func() { _ = st.Close() })
	e := &env{t: t, clock: clock, st: st, repo: state.New(st, clock.Now), hostTTL: 5}
	if _, err := e.repo.CreateProject(context.Background(), &model.Project{Meta: model.Meta{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	return e
}

func testLogger() *slog.Logger {
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (e *env) config(identity string, st store.Store) Config {
	if st == nil {
		st = e.st
	}
	return Config{
		Store: st, Identity: identity, Logger: testLogger().With("server", identity), Clock: e.clock.Now, Placer: FirstFit{},
		LeaseTTL: 5 * time.Second, ResyncInterval: 20 * time.Millisecond, HostDownGrace: time.Second,
	}
}

// start runs a manager until the test ends or the returned stop is called.
func (e *env) start(cfg Config) (*Manager, func()) {
	m := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := m.Run(ctx); err != nil {
			e.t.Errorf("%s: Run: %v", cfg.Identity, err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(stop)
	return m, stop
}

// addHost registers a ready host with a liveness key on its own lease.
func (e *env) addHost(name string, cpus int, mem model.Bytes, labels map[string]string) store.LeaseID {
	e.t.Helper()
	ctx := context.Background()
	lease, err := e.st.Grant(ctx, e.hostTTL)
	if err != nil {
		e.t.Fatal(err)
	}
	_, err = e.repo.UpsertHost(ctx, name, func(h *model.Host, _ bool) error {
		h.Capacity = model.Resources{CPUs: cpus, Memory: mem, Disk: 1 * model.TiB}
		h.State, h.Labels, h.Driver, h.LastSeen = model.HostReady, labels, "sim", e.clock.Now()
		return nil
	}, store.PutWithLease(store.AliveKey(name), mustJSON(model.AliveRecord{Server: "test", LeaseTTL: int(e.hostTTL)}), lease))
	if err != nil {
		e.t.Fatal(err)
	}
	return lease
}

func (e *env) createVM(name string, vcpus int, mem model.Bytes) {
	e.t.Helper()
	vm := &model.VM{Meta: model.Meta{Name: name, Project: "p"}, Spec: model.VMSpec{VCPUs: vcpus, Memory: mem, Power: model.PowerRunning}}
	if _, err := e.repo.CreateVM(context.Background(), vm); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) vms() []*model.VM {
	e.t.Helper()
	vms, _, err := e.repo.ListVMs(context.Background(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	return vms
}

func (e *env) vm(name string) *model.VM {
	e.t.Helper()
	vm, err := e.repo.GetVM(context.Background(), "p", name)
	if err != nil {
		e.t.Fatal(err)
	}
	return vm
}

// explanation is the scheduler's last explanation for vm, wherever it
// is stored (the record for a VM that fits nowhere, its own key for a
// placement).
func (e *env) explanation(vm *model.VM) *model.Explanation {
	e.t.Helper()
	ex, err := e.repo.GetExplanation(context.Background(), vm)
	if err != nil {
		e.t.Fatal(err)
	}
	return ex
}

func (e *env) host(name string) *model.Host {
	e.t.Helper()
	h, err := e.repo.GetHost(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

func (e *env) events(kind string) []model.Event {
	e.t.Helper()
	evs, _, err := e.repo.ListEvents(context.Background(), 0, "")
	if err != nil {
		e.t.Fatal(err)
	}
	var out []model.Event
	for _, ev := range evs {
		if kind == "" || ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// eventually polls cond until it holds; the deadline is generous and only
// guards against hangs (no test asserts durations).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkAllocations verifies the placement invariants on the stored state:
// every stored allocation equals the one recomputed from the VMs, and no
// host holds more than capacity × ratio (or reserves more than capacity).
func (e *env) checkAllocations() {
	e.t.Helper()
	ctx := context.Background()
	allocs, _, err := e.repo.ListAllocations(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	want := expectedAllocs(e.vms())
	hosts, _, err := e.repo.ListHosts(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	pol, _, err := e.repo.GetPolicy(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, h := range hosts {
		a := model.Allocation{}
		if allocs[h.Name] != nil {
			a = *allocs[h.Name]
		}
		if !sameAlloc(a, want[h.Name]) {
			e.t.Errorf("host %s: stored allocation %+v disagrees with VMs %+v", h.Name, a.Used, want[h.Name].Used)
		}
		if why := Fits(h, a, pol, nil); why != "" {
			e.t.Errorf("host %s over capacity: %s (used %+v)", h.Name, why, a.Used)
		}
	}
}

// crashStore lets a test kill a manager like kill -9: once crashed, every
// call fails and nothing is revoked, so its lease lingers until it expires.
type crashStore struct {
	store.Store
	crashed atomic.Bool
}

var errCrashed = errors.New("crashed")

func (c *crashStore) check() error {
	if c.crashed.Load() {
		return errCrashed
	}
	return nil
}

func (c *crashStore) Get(ctx context.Context, key string) (store.KV, error) {
	if err := c.check(); err != nil {
		return store.KV{}, err
	}
	return c.Store.Get(ctx, key)
}

func (c *crashStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if err := c.check(); err != nil {
		return nil, 0, err
	}
	return c.Store.List(ctx, prefix)
}

func (c *crashStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	if err := c.check(); err != nil {
		return false, 0, err
	}
	return c.Store.Txn(ctx, conds, ops)
}

func (c *crashStore) KeepAlive(ctx context.Context, id store.LeaseID) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Store.KeepAlive(ctx, id)
}

func (c *crashStore) Revoke(ctx context.Context, id store.LeaseID) error {
	if err := c.check(); err != nil {
		return err
	}
	return c.Store.Revoke(ctx, id)
}

func (c *crashStore) Grant(ctx context.Context, ttl int64) (store.LeaseID, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Store.Grant(ctx, ttl)
}

func vmName(i int) string { return fmt.Sprintf("vm%03d", i) }
