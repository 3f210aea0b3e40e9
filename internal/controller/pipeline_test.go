package controller

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// slowCommits is a store whose placement transactions (those that write
// an allocation) take a millisecond, as an fsync does, and are counted.
type slowCommits struct {
	store.Store
	placements atomic.Int32
}

func (s *slowCommits) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	for _, op := range ops {
		if strings.HasPrefix(op.Key, store.AllocPrefix) {
			s.placements.Add(1)
			time.Sleep(time.Millisecond)
			break
		}
	}
	return s.Store.Txn(ctx, conds, ops)
}

// While one group commits the scheduler decides the next: 400 VMs take
// far fewer transactions than VMs, every VM is placed exactly once and
// no host is over its capacity.
func TestPipelineCommitsGroups(t *testing.T) {
	e := newEnv(t)
	e.hostTTL = 3600
	for _, h := range []string{"h1", "h2", "h3", "h4", "h5", "h6", "h7", "h8"} {
		e.addHost(h, 64, 256*model.GiB, nil)
	}
	const n = 400
	for i := range n {
		e.createVM(vmName(i), 1, model.GiB)
	}
	st := &slowCommits{Store: e.st}
	cfg := e.config("a", st)
	cfg.Placer = NewSchedulerPlacer()
	e.start(cfg)
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
		if ev.To == string(model.PhaseCreating) {
			perVM[ev.Object]++
		}
	}
	for _, vm := range e.vms() {
		if perVM["vm/p/"+vm.Name] != 1 {
			t.Fatalf("%s placed %d times", vm.Name, perVM["vm/p/"+vm.Name])
		}
	}
	txns := st.placements.Load()
	t.Logf("%d VMs placed in %d transactions", n, txns)
	if txns > n/4 {
		t.Errorf("%d VMs took %d placement transactions: no group commits", n, txns)
	}
}
