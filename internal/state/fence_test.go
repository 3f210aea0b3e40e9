package state

import (
	"context"
	"errors"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// TestTermRepoWritesNothingOnceDeposed: every write of a term's
// repository — typed methods, Txn and the raw store it hands out — fails
// with ErrNotLeader and changes nothing once the leader key moved on,
// and goes through while the term lasts.
func TestTermRepoWritesNothingOnceDeposed(t *testing.T) {
	ctx := context.Background()
	base := newRepo(t)
	mustProject(t, base, "default", model.Quota{})
	vm := placedVM(t, base, "a")
	placedVM(t, base, "b")
	if _, err := base.UpsertHost(ctx, "h1", func(h *model.Host, _ bool) error { h.State = model.HostReady; return nil }); err != nil {
		t.Fatal(err)
	}
	mg, err := base.CreateMigration(ctx, newMigration(placedVM(t, base, "c")))
	if err != nil {
		t.Fatal(err)
	}
	_, rev, err := base.Txn(ctx, nil, []store.Op{store.Put(store.LeaderKey, []byte("me"))})
	if err != nil {
		t.Fatal(err)
	}
	term := base.Term(store.IfRev(store.LeaderKey, rev))
	writes := []struct {
		name string
		run  func() error
	}{
		{"UpdateHost", func() error {
			_, err := term.UpdateHost(ctx, "h1", func(h *model.Host) error { h.State = model.HostDown; return nil })
			return err
		}},
		{"UpdateVM", func() error {
			_, err := term.UpdateVM(ctx, "default", "a", func(v *model.VM) error { v.Status.Message = "x"; return nil })
			return err
		}},
		{"FinishDeleteVM", func() error { return term.FinishDeleteVM(ctx, "default", "b") }},
		{"AppendEvent", func() error { return term.AppendEvent(ctx, model.Event{Kind: "test"}) }},
		{"CreateMigration", func() error { _, err := term.CreateMigration(ctx, newMigration(vm)); return err }},
		{"HoldTarget", func() error { _, err := term.HoldTarget(ctx, mg.Name, nil); return err }},
		{"UpdateAllocation", func() error {
			_, err := term.UpdateAllocation(ctx, "h9", func(a *model.Allocation) error { return nil })
			return err
		}},
		{"Txn", func() error {
			_, _, err := term.Txn(ctx, nil, []store.Op{store.Put(store.BalancePlanKey, []byte("{}"))})
			return err
		}},
		{"Store().Txn", func() error {
			_, _, err := term.Store().Txn(ctx, nil, []store.Op{store.Delete(store.HostKey("h1"))})
			return err
		}},
	}
	// While the term lasts, its writes land (AppendEvent stands for all).
	if err := term.AppendEvent(ctx, model.Event{Kind: "test"}); err != nil {
		t.Fatalf("write within the term: %v", err)
	}
	if _, _, err := base.Txn(ctx, nil, []store.Op{store.Put(store.LeaderKey, []byte("usurper"))}); err != nil {
		t.Fatal(err)
	}
	_, before, err := base.Store().List(ctx, store.LeaderKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			if err := w.run(); !errors.Is(err, ErrNotLeader) {
				t.Errorf("err = %v, want ErrNotLeader", err)
			}
			if _, now, _ := base.Store().List(ctx, store.LeaderKey); now != before {
				t.Errorf("store revision %d → %d: a deposed term wrote", before, now)
			}
		})
	}
}

// TestTermRepoConflictIsNotDeposition: a lost compare-and-swap within a
// live term stays a conflict (retried), not ErrNotLeader.
func TestTermRepoConflictIsNotDeposition(t *testing.T) {
	ctx := context.Background()
	base := newRepo(t)
	_, rev, err := base.Txn(ctx, nil, []store.Op{store.Put(store.LeaderKey, []byte("me"))})
	if err != nil {
		t.Fatal(err)
	}
	term := base.Term(store.IfRev(store.LeaderKey, rev))
	ok, _, err := term.Txn(ctx, []store.Cond{store.IfExists("/vpool/nothing")}, []store.Op{store.Put("/vpool/x", nil)})
	if ok || err != nil {
		t.Fatalf("ok %v err %v, want a plain conflict", ok, err)
	}
}
