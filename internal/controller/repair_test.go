package controller

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// assignRaw stores a VM on a host without touching any allocation, as a
// crash between two non-transactional writes would leave it.
func (e *env) assignRaw(name, host string) {
	e.t.Helper()
	vm := e.vm(name)
	vm.Status.Host, vm.Status.Phase = host, model.PhaseRunning
	if _, _, err := e.st.Txn(context.Background(), nil, []store.Op{store.Put(store.VMKey("p", name), encodeVM(vm))}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) putAllocRaw(a model.Allocation) {
	e.t.Helper()
	if _, _, err := e.st.Txn(context.Background(), nil, []store.Op{store.Put(store.AllocKey(a.Host), mustJSON(a))}); err != nil {
		e.t.Fatal(err)
	}
}

func TestRepairRecomputesAllocationsFromVMs(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	e.addHost("h2", 4, 4*model.GiB, nil)
	e.addHost("h3", 4, 4*model.GiB, nil)
	e.createVM("a", 2, 2*model.GiB)
	e.createVM("b", 2, 2*model.GiB)
	e.assignRaw("a", "h1") // h1: no allocation stored at all
	e.assignRaw("b", "h2")
	// h2 counts a ghost that no longer exists; h3 counts one on the wrong host
	e.putAllocRaw(model.Allocation{Host: "h2", Used: model.Resources{CPUs: 4, Memory: 4 * model.GiB}, VMs: map[string]bool{"p/ghost": true, "p/b": true}})
	e.putAllocRaw(model.Allocation{Host: "h3", Used: model.Resources{CPUs: 2, Memory: 2 * model.GiB}, VMs: map[string]bool{"p/a": true}})
	// c fits only once the ghost's and a's phantom holds are gone
	e.createVM("c", 4, 4*model.GiB)
	if _, err := e.repo.UpdateHost(context.Background(), "h1", func(h *model.Host) error { h.Cordoned = true; return nil }); err != nil {
		t.Fatal(err)
	}

	e.start(e.config("a", nil))
	eventually(t, "c placed", func() bool { return e.vm("c").Status.Host == "h3" })
	e.checkAllocations()
}

type crashingPlacer struct {
	inner  Placer
	placed atomic.Int32
	after  int32
	crash  func()
	// each decision takes this long: the pipeline commits each VM alone
	// while the next is decided, as a slow scheduler would
	delay time.Duration
}

func (p *crashingPlacer) Place(s *Snapshot, vm *model.VM) (string, *model.Explanation) {
	time.Sleep(p.delay)
	host, expl := p.inner.Place(s, vm)
	if host != "" && p.placed.Add(1) > p.after {
		p.crash()
	}
	return host, expl
}

// TestCrashMidwayConvergesExactlyOnce kills a leader in the middle of a
// scheduling pass; a new server takes over and every VM ends up placed
// exactly once, with consistent allocations.
func TestCrashMidwayConvergesExactlyOnce(t *testing.T) {
	e := newEnv(t)
	e.hostTTL = 3600
	for _, h := range []string{"h1", "h2", "h3"} {
		e.addHost(h, 8, 16*model.GiB, nil)
	}
	const n = 30
	for i := range n {
		e.createVM(vmName(i), 1+i%2, 1*model.GiB)
	}
	cs := &crashStore{Store: e.st}
	cp := &crashingPlacer{inner: FirstFit{}, after: 10, crash: func() { cs.crashed.Store(true) }, delay: 2 * time.Millisecond}
	cfg := e.config("a", cs)
	cfg.Placer = cp
	a, stopA := e.start(cfg)
	eventually(t, "a crashed mid-pass", func() bool { return cs.crashed.Load() })
	stopA()
	if a.IsLeader() {
		t.Fatal("crashed manager still claims leadership")
	}
	placed := 0
	for _, vm := range e.vms() {
		if vm.Status.Host != "" {
			placed++
		}
	}
	// decisions commit in groups while the next ones are decided: some
	// of the first ten were committed, none after the crash
	if placed < 1 || placed > 10 {
		t.Fatalf("%d VMs placed before the crash, want 1 to 10", placed)
	}
	t.Logf("%d VMs placed before the crash", placed)

	b, _ := e.start(e.config("b", nil))
	e.clock.Step(6 * time.Second) // a's leader lease expires
	e.st.ExpireLeases()
	eventually(t, "b leads", b.IsLeader)
	eventually(t, "all placed", func() bool {
		for _, vm := range e.vms() {
			if vm.Status.Host == "" {
				return false
			}
		}
		return true
	})
	e.checkAllocations()
	perVM := map[string]int{}
	for _, ev := range e.events("vm.phase") {
		perVM[ev.Object]++
	}
	for _, vm := range e.vms() {
		if got := perVM["vm/p/"+vm.Name]; got != 1 {
			t.Errorf("%s placed %d times, want exactly once", vm.Name, got)
		}
	}
}
