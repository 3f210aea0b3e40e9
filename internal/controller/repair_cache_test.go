package controller

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// listCounter counts the store's listings of VMs.
type listCounter struct {
	store.Store
	vmLists atomic.Int32
}

func (l *listCounter) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if strings.HasPrefix(store.VMsPrefix, prefix) || strings.HasPrefix(prefix, store.VMsPrefix) {
		l.vmLists.Add(1)
	}
	return l.Store.List(ctx, prefix)
}

// repairEnv is a term whose repair has not run, over a cache the test
// fills as the watches would, prefix by prefix.
type repairEnv struct {
	*env
	r     *reconciler
	lists *listCounter
}

func newRepairEnv(t *testing.T) *repairEnv {
	e := &repairEnv{env: newEnv(t)}
	e.lists = &listCounter{Store: e.st}
	m := New(e.config("s1", e.lists))
	e.r = newReconciler(m, m.newTerm(), newCache(m.log))
	return e
}

// relist fills the cache's sources from listings of the store, as the
// reflectors do at a term's start (not counted as the repair's).
func (e *repairEnv) relist() {
	e.t.Helper()
	for _, src := range e.r.c.sources() {
		kvs, rev, err := e.st.List(context.Background(), src.prefix)
		if err != nil {
			e.t.Fatal(err)
		}
		e.r.c.resetSource(src, kvs, rev)
	}
}

// deliver applies the store's current value of key to the cache as one
// watch response of its prefix would.
func (e *repairEnv) deliver(prefix, key string) {
	e.t.Helper()
	kv, err := e.st.Get(context.Background(), key)
	if err != nil {
		e.t.Fatal(err)
	}
	c := e.r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, src := range c.sources() {
		if src.prefix == prefix {
			src.apply(store.WatchEvent{Type: store.EventPut, KV: kv, Rev: kv.ModRev})
			c.through[prefix] = max(c.through[prefix], kv.ModRev)
		}
	}
}

// broken stores two VMs on hosts with allocations that disagree, as a
// crash between two writes would leave them: h1 has none, h2 counts a
// ghost, h3 a VM that runs on h1.
func (e *repairEnv) broken() {
	e.addHost("h1", 8, 8*model.GiB, nil)
	e.addHost("h2", 8, 8*model.GiB, nil)
	e.addHost("h3", 8, 8*model.GiB, nil)
	e.createVM("a", 2, 2*model.GiB)
	e.createVM("b", 2, 2*model.GiB)
	e.assignRaw("a", "h1")
	e.assignRaw("b", "h2")
	e.putAllocRaw(model.Allocation{Host: "h2", Used: model.Resources{CPUs: 4, Memory: 4 * model.GiB}, VMs: map[string]bool{"p/ghost": true, "p/b": true}})
	e.putAllocRaw(model.Allocation{Host: "h3", Used: model.Resources{CPUs: 2, Memory: 2 * model.GiB}, VMs: map[string]bool{"p/a": true}})
}

func (e *repairEnv) repair() error {
	return e.r.repairOnce(context.Background())
}

// TestRepairFromTheCache: a term's repair decides from the controllers'
// cache (which holds every VM already), not from a listing of every VM
// in the store; it leaves a host whose allocation the cached VMs are
// behind, and reads the store only when they stay behind.
func TestRepairFromTheCache(t *testing.T) {
	t.Run("the cache suffices", func(t *testing.T) {
		e := newRepairEnv(t)
		e.broken()
		e.relist()
		if err := e.repair(); err != nil {
			t.Fatal(err)
		}
		e.checkAllocations()
		if n := e.lists.vmLists.Load(); n != 0 {
			t.Errorf("the repair listed the store's VMs %d times, want 0 (the cache holds them)", n)
		}
	})
	t.Run("an allocation newer than the cached VMs waits for them", func(t *testing.T) {
		e := newRepairEnv(t)
		e.broken()
		e.relist()
		// c moves onto h3 with h3's allocation, in one transaction; the
		// cache sees the allocation before the VM: from the VMs it holds,
		// h3 would count a alone and lose c
		e.createVM("c", 1, model.GiB)
		e.deliver(store.VMsPrefix, store.VMKey("p", "c"))
		if _, err := e.repo.UpdateVM(context.Background(), "p", "c", func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = "h3", model.PhaseRunning
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		e.deliver(store.AllocPrefix, store.AllocKey("h3"))
		if err := e.repair(); !errors.Is(err, errNotRepaired) {
			t.Fatalf("with h3's allocation ahead of the VMs: %v, want %v", err, errNotRepaired)
		}
		if a, err := e.repo.GetAllocation(context.Background(), "h3"); err != nil || !a.VMs["p/c"] {
			t.Fatalf("h3's allocation lost c, which runs there: %+v (%v)", a, err)
		}
		e.deliver(store.VMsPrefix, store.VMKey("p", "c"))
		if err := e.repair(); err != nil {
			t.Fatal(err)
		}
		e.checkAllocations()
		if n := e.lists.vmLists.Load(); n != 0 {
			t.Errorf("the repair listed the store's VMs %d times, want 0", n)
		}
	})
	t.Run("a guard lost to a concurrent change is tried again", func(t *testing.T) {
		e := newRepairEnv(t)
		e.broken()
		e.relist()
		// h2's allocation changes in the store after the cache read it
		e.putAllocRaw(model.Allocation{Host: "h2", Used: model.Resources{CPUs: 6, Memory: 6 * model.GiB}, VMs: map[string]bool{"p/ghost": true, "p/b": true, "p/x": true}})
		if err := e.repair(); !errors.Is(err, errNotRepaired) {
			t.Fatalf("with h2's allocation changed: %v, want %v", err, errNotRepaired)
		}
		e.deliver(store.AllocPrefix, store.AllocKey("h2"))
		// a VM changes after it, and the VMs' watch delivers that
		if _, err := e.repo.UpdateVM(context.Background(), "p", "b", func(v *model.VM) error {
			v.Status.Message = "still running"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		e.deliver(store.VMsPrefix, store.VMKey("p", "b"))
		if err := e.repair(); err != nil {
			t.Fatal(err)
		}
		e.checkAllocations()
		if n := e.lists.vmLists.Load(); n != 0 {
			t.Errorf("the repair listed the store's VMs %d times, want 0", n)
		}
	})
	t.Run("VMs that stay behind: the store", func(t *testing.T) {
		e := newRepairEnv(t)
		e.broken()
		e.relist()
		// an allocation written alone: no VM event follows it
		e.putAllocRaw(model.Allocation{Host: "h2", Used: model.Resources{CPUs: 6, Memory: 6 * model.GiB}, VMs: map[string]bool{"p/ghost": true, "p/b": true, "p/x": true}})
		e.deliver(store.AllocPrefix, store.AllocKey("h2"))
		for i := range repairCachePasses {
			if err := e.repair(); !errors.Is(err, errNotRepaired) {
				t.Fatalf("pass %d: %v, want %v", i, err, errNotRepaired)
			}
		}
		if err := e.repair(); err != nil {
			t.Fatal(err)
		}
		e.checkAllocations()
		if n := e.lists.vmLists.Load(); n != 1 {
			t.Errorf("the repair listed the store's VMs %d times, want 1", n)
		}
	})
}

// BenchmarkRepair: a term's repair at 10,000 hosts and 100,000 VMs on
// the in-memory store, the allocations consistent (what a repair finds
// at a term's start): from the controllers' cache, and from a listing
// of the store (before issue 14's seventh round, and now the fallback
// after repairCachePasses). Reports the bytes it allocates.
func BenchmarkRepair(b *testing.B) {
	e := newEnv(b)
	const hosts, vms = 10_000, 100_000
	ctx := context.Background()
	var ops []store.Op
	flush := func(force bool) {
		if len(ops) >= 500 || (force && len(ops) > 0) {
			if _, _, err := e.st.Txn(ctx, nil, ops); err != nil {
				b.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	all := make([]*model.VM, 0, vms)
	for i := range vms {
		vm := &model.VM{Meta: model.Meta{Name: vmName(i), Project: "p", CreatedAt: e.clock.Now()},
			Spec:   model.VMSpec{VCPUs: 1 + i%4, Memory: model.Bytes(1+i%8) * model.GiB, Power: model.PowerRunning},
			Status: model.VMStatus{Host: fmt.Sprintf("h%05d", i%hosts), Phase: model.PhaseRunning}}
		all = append(all, vm)
		ops = append(ops, store.Put(store.VMKey("p", vm.Name), encodeVM(vm)))
		flush(false)
	}
	for h, a := range expectedAllocs(all) {
		ops = append(ops, store.Put(store.AllocKey(h), mustJSON(a)))
		flush(false)
	}
	flush(true)
	for _, path := range []string{"cache", "store"} {
		b.Run(path, func(b *testing.B) {
			var alloc uint64
			for b.Loop() {
				b.StopTimer()
				m := New(e.config("s1", nil))
				r := newReconciler(m, m.newTerm(), newCache(m.log))
				for _, src := range r.c.sources() {
					kvs, rev, err := e.st.List(ctx, src.prefix)
					if err != nil {
						b.Fatal(err)
					}
					r.c.resetSource(src, kvs, rev)
				}
				if path == "store" {
					r.repairPasses = repairCachePasses
				}
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				b.StartTimer()
				if err := r.repairOnce(ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				runtime.ReadMemStats(&after)
				alloc += after.TotalAlloc - before.TotalAlloc
				b.StartTimer()
			}
			b.ReportMetric(float64(alloc)/float64(b.N)/1e6, "MB-alloc/repair")
		})
	}
}
