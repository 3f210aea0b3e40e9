package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// getCountingStore counts Gets by key.
type getCountingStore struct {
	store.Store
	mu   sync.Mutex
	gets map[string]int
}

func (c *getCountingStore) Get(ctx context.Context, key string) (store.KV, error) {
	c.mu.Lock()
	c.gets[key]++
	c.mu.Unlock()
	return c.Store.Get(ctx, key)
}

func (c *getCountingStore) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gets
	c.gets = map[string]int{}
	return g
}

// TestAdmissionStartsFromItsLastCommit: a project's next admission starts
// from what its last one committed (the project, its usage as written,
// the policy) instead of reading the three keys again (issue 14: three
// store round trips per admission); one that changed meanwhile — here
// another server's creates and a quota change — fails the guard and is
// read again, so the quota holds exactly.
func TestAdmissionStartsFromItsLastCommit(t *testing.T) {
	ctx := context.Background()
	mem := memstore.New()
	t.Cleanup(func() { mem.Close() })
	cs := &getCountingStore{Store: mem, gets: map[string]int{}}
	a, b := New(cs, nil), New(mem, nil) // two servers on one store
	mustProject(t, a, "p", model.Quota{VMs: 5})
	create := func(r *Repo, name string) error {
		_, err := r.CreateVM(ctx, mkVM("p", name, 1, 64*model.MiB))
		return err
	}
	if err := create(a, "v1"); err != nil {
		t.Fatal(err)
	}
	cs.take()
	if err := create(a, "v2"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{store.ProjectKey("p"), store.UsageKey("p"), store.PolicyKey} {
		if n := cs.take()[k]; n != 0 {
			t.Fatalf("the second create read %s %d times: want it kept from the first", k, n)
		}
	}
	// Another server creates two: a's kept usage (2) is stale (4).
	for i := range 2 {
		if err := create(b, fmt.Sprintf("w%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := create(a, "v3"); err != nil {
		t.Fatal(err)
	}
	// After a kept base lost its guard the next admissions read the store
	// (other servers create in this project: a kept base would mostly
	// cost a lost transaction).
	cs.take()
	if err := create(a, "v4"); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("the sixth VM of a 5-VM quota: %v, want ErrQuotaExceeded", err)
	}
	if n := cs.take()[store.UsageKey("p")]; n == 0 {
		t.Fatal("the admission after a lost guard did not read the usage from the store")
	}
	if u, _, _ := a.GetUsage(ctx, "p"); u.VMs != 5 {
		t.Fatalf("usage %d VMs, want 5", u.VMs)
	}
	// A quota raised elsewhere is seen at once (the kept project's guard).
	if _, err := b.UpdateProject(ctx, "p", func(p *model.Project) error { p.Quota.VMs = 6; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := create(a, "v5"); err != nil {
		t.Fatalf("after raising the quota to 6: %v", err)
	}
}
