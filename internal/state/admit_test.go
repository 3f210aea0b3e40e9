package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// slowUsage is a store whose transactions on a project's usage key take
// a millisecond (an fsync) and are counted.
type slowUsage struct {
	store.Store
	txns atomic.Int32
}

func (s *slowUsage) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	for _, op := range ops {
		if strings.HasPrefix(op.Key, store.UsagePrefix) {
			s.txns.Add(1)
			time.Sleep(time.Millisecond)
			break
		}
	}
	return s.Store.Txn(ctx, conds, ops)
}

// createAll creates one VM per name at once, each by its own call, and
// returns the calls' errors by name.
func createAll(r *Repo, project string, names []string, edit func(*model.VM)) map[string]error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	out := map[string]error{}
	for _, n := range names {
		wg.Go(func() {
			vm := mkVM(project, n, 1, 64*model.MiB)
			if edit != nil {
				edit(vm)
			}
			_, err := r.CreateVM(context.Background(), vm)
			mu.Lock()
			out[n] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// Concurrent creates of one project share transactions, each still
// answered on its own: over-quota calls and taken names are refused, the
// others are stored, and the usage key counts exactly what was stored.
func TestAdmissionGroupCommits(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	st := &slowUsage{Store: mem}
	r := New(st, nil)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{VMs: 150})
	if _, err := r.CreateVM(ctx, mkVM("p", "taken", 1, 64*model.MiB)); err != nil {
		t.Fatal(err)
	}
	before := st.txns.Load()
	names := []string{"taken"}
	for i := range 200 {
		names = append(names, fmt.Sprintf("vm%03d", i))
	}
	errs := createAll(r, "p", names, nil)
	created, quota := 0, 0
	for n, err := range errs {
		switch {
		case n == "taken":
			if !errors.Is(err, ErrExists) {
				t.Errorf("a second VM named taken: %v", err)
			}
		case err == nil:
			created++
		case errors.Is(err, ErrQuotaExceeded):
			quota++
		default:
			t.Errorf("%s: %v", n, err)
		}
	}
	if created != 149 || quota != 51 {
		t.Errorf("%d created and %d over quota, want 149 and 51", created, quota)
	}
	u, _, err := r.GetUsage(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	vms, _, _ := r.ListVMs(ctx, "p")
	if u.VMs != 150 || len(vms) != 150 {
		t.Errorf("usage counts %d VMs, %d stored", u.VMs, len(vms))
	}
	txns := st.txns.Load() - before
	t.Logf("200 creates in %d transactions", txns)
	if txns > 50 {
		t.Errorf("200 concurrent creates took %d transactions: no group commits", txns)
	}
}

// Calls with members of a hard group get a transaction of their own: the
// scheduler treats VMs of one group created at one revision as one
// request's gang, all or nothing.
func TestAdmissionKeepsGangsApart(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	r := New(&slowUsage{Store: mem}, nil)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{})
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("g%02d", i))
	}
	errs := createAll(r, "p", names, func(vm *model.VM) {
		vm.Spec.Placement.AffinityGroup, vm.Spec.Placement.Affinity = "web", model.AntiAffinityHard
	})
	for n, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	revs := map[int64]int{}
	for _, n := range names {
		kv, err := mem.Get(ctx, store.VMKey("p", n))
		if err != nil {
			t.Fatal(err)
		}
		revs[kv.CreateRev]++
	}
	if len(revs) != len(names) {
		t.Fatalf("20 single-VM calls of one hard group share create revisions: %v", revs)
	}
}

// A create that names a taken VM in a project at its quota is answered
// "exists", not "quota exceeded": the name is the thing to change (CI saw
// the group commit answer the quota when the call came after the others
// had filled it).
func TestTakenNameBeatsQuota(t *testing.T) {
	r := New(memstore.New(), nil)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{VMs: 1})
	if _, err := r.CreateVM(ctx, mkVM("p", "taken", 1, 64*model.MiB)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateVM(ctx, mkVM("p", "taken", 1, 64*model.MiB)); !errors.Is(err, ErrExists) {
		t.Fatalf("a second VM named taken at the quota: %v, want it exists", err)
	}
	if _, err := r.CreateVM(ctx, mkVM("p", "other", 1, 64*model.MiB)); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("a new name at the quota: %v, want the quota", err)
	}
}
