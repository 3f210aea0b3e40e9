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

// usageSpread is a store whose admission transactions (those that write
// a usage key) take a millisecond and are counted, with how many usage
// keys (projects) each wrote.
type usageSpread struct {
	store.Store
	txns, multi atomic.Int32
}

func (s *usageSpread) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	n := 0
	for _, op := range ops {
		if strings.HasPrefix(op.Key, store.UsagePrefix) {
			n++
		}
	}
	if n > 0 {
		s.txns.Add(1)
		if n > 1 {
			s.multi.Add(1)
		}
		time.Sleep(time.Millisecond)
	}
	return s.Store.Txn(ctx, conds, ops)
}

// TestAdmissionMergesProjects: concurrent creates of several projects
// share transactions (issue 14: one admission transaction per 3.3 creates
// with a queue per project), and still each project's quota holds
// exactly — also with a second server creating in the same projects at
// the same time, whose commits make the first one's kept bases stale —
// and the usage key of each counts exactly its own VMs.
func TestAdmissionMergesProjects(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	st := &usageSpread{Store: mem}
	a, b := New(st, nil), New(st, nil) // two servers on one store
	ctx := context.Background()
	var projects []string // more than the committers in flight at once
	for i := range 3 * admitCommitters {
		projects = append(projects, fmt.Sprintf("p%d", i))
	}
	const quota, each = 15, 12 // per project and server: 24 asked, 15 fit
	for _, p := range projects {
		mustProject(t, a, p, model.Quota{VMs: quota})
	}
	before := st.txns.Load()
	var wg sync.WaitGroup
	var created, refused, other atomic.Int32
	for si, r := range []*Repo{a, b} {
		for _, p := range projects {
			for i := range each {
				wg.Go(func() {
					_, err := r.CreateVM(ctx, mkVM(p, fmt.Sprintf("s%d-%02d", si, i), 1, 64*model.MiB))
					switch {
					case err == nil:
						created.Add(1)
					case errors.Is(err, ErrQuotaExceeded):
						refused.Add(1)
					default:
						other.Add(1)
						t.Errorf("%s: %v", p, err)
					}
				})
			}
		}
	}
	wg.Wait()
	for _, p := range projects {
		u, _, err := a.GetUsage(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		vms, _, _ := a.ListVMs(ctx, p)
		if u.VMs != quota || len(vms) != quota {
			t.Errorf("project %s: usage counts %d VMs, %d stored, quota %d", p, u.VMs, len(vms), quota)
		}
	}
	if int(created.Load()) != quota*len(projects) || int(refused.Load()) != (2*each-quota)*len(projects) {
		t.Errorf("%d created and %d refused, want %d and %d", created.Load(), refused.Load(), quota*len(projects), (2*each-quota)*len(projects))
	}
	txns := st.txns.Load() - before
	t.Logf("%d creates of %d projects by two servers in %d transactions, %d of them with several projects",
		2*each*len(projects), len(projects), txns, st.multi.Load())
	if st.multi.Load() == 0 {
		t.Error("no admission transaction held creates of two projects: each project still commits alone")
	}
}

// A call of a project that does not exist is refused on its own; the
// calls of other projects in the same transaction are stored.
func TestAdmissionMergedMissingProject(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	r := New(&usageSpread{Store: mem}, nil)
	mustProject(t, r, "p", model.Quota{})
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		project := "p"
		if i%2 == 1 {
			project = "nope"
		}
		wg.Go(func() {
			_, errs[i] = r.CreateVM(context.Background(), mkVM(project, fmt.Sprintf("v%02d", i), 1, 64*model.MiB))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 && err != nil {
			t.Errorf("create %d in p: %v", i, err)
		}
		if i%2 == 1 && !errors.Is(err, store.ErrNotFound) {
			t.Errorf("create %d in a missing project: %v, want not found", i, err)
		}
	}
	if u, _, _ := r.GetUsage(context.Background(), "p"); u.VMs != 10 {
		t.Errorf("usage of p counts %d VMs, want 10", u.VMs)
	}
}
