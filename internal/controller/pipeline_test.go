package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
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

// sizedCommits records the largest placement transaction (operations
// and bytes); each takes 20 ms, so that the next group grows meanwhile.
type sizedCommits struct {
	store.Store
	mu           sync.Mutex
	ops, byteMax int
}

func (s *sizedCommits) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	placing, n := false, 0
	for _, op := range ops {
		placing = placing || strings.HasPrefix(op.Key, store.AllocPrefix)
		n += len(op.Key) + len(op.Value)
	}
	if placing {
		s.mu.Lock()
		s.ops, s.byteMax = max(s.ops, len(ops), len(conds)), max(s.byteMax, n)
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return s.Store.Txn(ctx, conds, ops)
}

// The gate's groups grow to the store's transaction cap (Config.MaxTxnOps,
// our embedded member's 512; etcd's 128 by default), and stay under a
// MiB whatever the VMs' cloud-init seeds.
func TestPipelineGroupsFitTheStore(t *testing.T) {
	for _, tc := range []struct {
		name             string
		maxOps, userData int
		wantOver         int  // the largest transaction has more operations than this
		wantOps          int  // and at most this many
		sealed           bool // the user data as servers store it: sealed, in base64
	}{
		{"etcd's default", 0, 0, 64, 128, false},
		{"our member's cap", 512, 0, 128, 512, false},
		{"large seeds", 512, 60 << 10, 0, 128, false},
		{"large sealed seeds", 512, 60 << 10, 0, 128, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.hostTTL = 3600
			for i := range 16 {
				e.addHost(fmt.Sprintf("h%02d", i), 64, 256*model.GiB, nil)
			}
			for i := range 600 {
				vm := &model.VM{Meta: model.Meta{Name: vmName(i), Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB, Power: model.PowerRunning}}
				switch {
				case tc.sealed:
					vm.Spec.CloudInit = &model.CloudInit{UserDataSize: tc.userData, UserDataDigest: "hmac-sha256:00",
						UserDataSealed: &model.SealedValue{KeyID: "0011223344556677", Data: make([]byte, tc.userData+model.SealOverhead)}}
				case tc.userData > 0:
					vm.Spec.CloudInit = &model.CloudInit{UserData: strings.Repeat("x", tc.userData)}
				}
				if _, err := e.repo.CreateVM(context.Background(), vm); err != nil {
					t.Fatal(err)
				}
			}
			st := &sizedCommits{Store: e.st}
			cfg := e.config("a", st)
			cfg.Placer, cfg.MaxTxnOps = NewSchedulerPlacer(), tc.maxOps
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
			st.mu.Lock()
			defer st.mu.Unlock()
			t.Logf("largest placement transaction: %d operations, %d bytes", st.ops, st.byteMax)
			if st.ops <= tc.wantOver || st.ops > tc.wantOps {
				t.Errorf("largest placement transaction has %d operations or comparisons, want over %d and at most %d", st.ops, tc.wantOver, tc.wantOps)
			}
			if st.byteMax > 3<<19 {
				t.Errorf("a placement transaction of %d bytes, over etcd's 1.5 MiB", st.byteMax)
			}
		})
	}
}
