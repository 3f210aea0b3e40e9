package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Two admissions (of two projects, so no group commit joins them) read
// the same state before either commits — the judge holds the first two
// readers until both have read — and the reserve has room for one more
// VM: one is stored and the other refused, because the second commit's
// guard (the reserve ticket) fails and its retry reads the first VM.
// Judged outside the transaction, both would be stored.
func TestReserveIsJudgedInTheAdmission(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	pol := model.DefaultPolicy()
	pol.HA = &model.HAPolicy{TolerateHostFailures: 1}
	if _, err := r.PutPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"p1", "p2", "p3"} {
		mustProject(t, r, p, model.Quota{})
	}
	var (
		mu      sync.Mutex
		readers int
		both    = make(chan struct{})
	)
	const room = 1 // VMs the reserve still takes
	r.SetReserveCheck(func(_ model.Policy, tolerate int, _ []*model.Host, _ map[string]*model.Allocation, vms []*model.VM) func(model.Resources) error {
		if tolerate != 1 {
			t.Errorf("judge asked about %d host failures, want 1", tolerate)
		}
		mu.Lock()
		readers++
		if readers == 2 {
			close(both)
		}
		first := readers <= 2
		mu.Unlock()
		if first { // the first two readers read the same state
			select {
			case <-both:
			case <-time.After(5 * time.Second):
			}
		}
		return func(add model.Resources) error {
			if len(vms)+add.CPUs > room {
				return fmt.Errorf("%d VMs stored and %d vCPUs more: no room", len(vms), add.CPUs)
			}
			return nil
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, p := range []string{"p1", "p2"} {
		wg.Go(func() { _, errs[i] = r.CreateVM(ctx, mkVM(p, "vm", 1, 64*model.MiB)) })
	}
	wg.Wait()
	vms, _, err := r.ListVMs(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var fe *model.FieldError
	refused := 0
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, ErrReserve) && errors.As(err, &fe) && fe.Field == "ha.tolerateHostFailures":
			refused++
		default:
			t.Errorf("create: %v", err)
		}
	}
	if len(vms) != room || refused != 1 {
		t.Fatalf("%d VMs stored (want %d), %d refused by the reserve (want 1): %v", len(vms), room, refused, errs)
	}
	// The refused call's usage was not counted.
	u1, _, _ := r.GetUsage(ctx, "p1")
	u2, _, _ := r.GetUsage(ctx, "p2")
	if u1.VMs+u2.VMs != room {
		t.Fatalf("usage counts %d VMs, want %d", u1.VMs+u2.VMs, room)
	}
	// Without a reserve in the policy the judge is not asked.
	pol.HA = nil
	if _, err := r.PutPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateVM(ctx, mkVM("p3", "vm", 1, 64*model.MiB)); err != nil {
		t.Fatalf("create without a reserve: %v", err)
	}
}
