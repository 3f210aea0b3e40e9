package controller

import (
	"context"
	"errors"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// TestCompactionTidiesExplanations: a record stored with its placement's
// explanation inside (before they were kept apart) has it moved to its
// own key, and an explanation whose VM is gone is deleted, by the
// compaction pass of the next leader.
func TestCompactionTidiesExplanations(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.addHost("h1", 4, 8*model.GiB, nil)
	e.createVM("old", 1, model.GiB)
	_, stop := e.start(e.config("a", nil))
	eventually(t, "old placed", func() bool { return e.vm("old").Status.Host != "" })
	stop()

	// what a server from before stored: the explanation in the record
	embedded := &model.Explanation{Hosts: 1, Chosen: "h1", Summary: "placed on h1 by a server from before"}
	if _, err := e.repo.UpdateVM(ctx, "p", "old", func(v *model.VM) error { v.Status.Explanation = embedded; return nil }); err != nil {
		t.Fatal(err)
	}
	orphan := store.ExplanationKey("p", "gone")
	if _, _, err := e.st.Txn(ctx, nil, []store.Op{store.Delete(store.ExplanationKey("p", "old")),
		store.Put(orphan, mustJSON(model.StoredExplanation{UID: "u-gone", Explanation: embedded}))}); err != nil {
		t.Fatal(err)
	}
	if ex := e.explanation(e.vm("old")); ex == nil || ex.Summary != embedded.Summary {
		t.Fatalf("old record: explanation %+v", ex)
	}

	e.start(e.config("b", nil))
	eventually(t, "the explanation moved out of the record", func() bool { return e.vm("old").Status.Explanation == nil })
	if ex := e.explanation(e.vm("old")); ex == nil || ex.Summary != embedded.Summary {
		t.Fatalf("moved: explanation %+v", ex)
	}
	eventually(t, "the orphan pruned", func() bool {
		_, err := e.st.Get(ctx, orphan)
		return errors.Is(err, store.ErrNotFound)
	})
}
