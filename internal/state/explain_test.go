package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// assignOne places a new VM of project p on host h with an explanation
// naming h, and returns the VM as stored.
func assignOne(t *testing.T, r *Repo, p, name, h string) *model.VM {
	t.Helper()
	ctx := context.Background()
	v, err := r.CreateVM(ctx, mkVM(p, name, 1, model.GiB))
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.GetAllocation(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	e := &model.Explanation{Hosts: 3, Chosen: h, Summary: "placed on " + h,
		Candidates: []model.Candidate{{Host: h, Score: 0.9, Parts: map[string]float64{"binpack": 0.9}}}}
	got, ok, err := r.Assign(ctx, []Assignment{{VM: v, Host: h, Explanation: e}}, map[string]model.Allocation{h: *a}, 0)
	if err != nil || !ok {
		t.Fatalf("Assign = %v, %v", ok, err)
	}
	return got.VMs[0]
}

// TestExplanationGoesWithTheVM: a placement's explanation is stored at
// its own key, not in the record, and deleted with the VM.
func TestExplanationGoesWithTheVM(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{})
	vm := assignOne(t, r, "p", "a", "h1")
	kv, err := r.Store().Get(ctx, store.VMKey("p", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(kv.Value, []byte("binpack")) {
		t.Fatalf("the VM's record carries its explanation: %s", kv.Value)
	}
	if e, err := r.GetExplanation(ctx, vm); err != nil || e == nil || e.Chosen != "h1" || e.Candidates[0].Parts["binpack"] != 0.9 {
		t.Fatalf("GetExplanation = %+v, %v", e, err)
	}
	if err := r.FinishDeleteVM(ctx, "p", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Store().Get(ctx, store.ExplanationKey("p", "a")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("explanation after the VM's delete: %v", err)
	}
	// a VM created later under that name shows no explanation of the first
	if _, _, err := r.Store().Txn(ctx, nil, []store.Op{explanationOp(vm, &model.Explanation{Chosen: "h1"})}); err != nil {
		t.Fatal(err)
	}
	again, err := r.CreateVM(ctx, mkVM("p", "a", 1, model.GiB))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := r.GetExplanation(ctx, again); err != nil || e != nil {
		t.Fatalf("a new VM of the same name shows %+v, %v", e, err)
	}
}

// TestOldRecordExplanation: a record stored with its placement's
// explanation inside (before they were kept apart) reads the same, and
// MoveExplanations moves it out, guarded on the record's revision.
func TestOldRecordExplanation(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "default", model.Quota{})
	old := &model.Explanation{Hosts: 2, Chosen: "h1", Summary: "placed on h1 (old record)"}
	mk := func(name string) *model.VM {
		placedVM(t, r, name)
		v, err := r.UpdateVM(ctx, "default", name, func(v *model.VM) error { v.Status.Explanation = old; return nil })
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b := mk("a"), mk("b")
	for _, v := range []*model.VM{a, b} {
		if e, err := r.GetExplanation(ctx, v); err != nil || e == nil || e.Summary != old.Summary {
			t.Fatalf("old record %s: GetExplanation = %+v, %v", v.Name, e, err)
		}
	}
	changed, err := r.UpdateVM(ctx, "default", "b", func(v *model.VM) error { v.Status.Message = "report"; return nil })
	if err != nil {
		t.Fatal(err)
	}
	moved, err := r.MoveExplanations(ctx, []*model.VM{a, b}) // b as read before it changed
	if err != nil || moved != 1 {
		t.Fatalf("MoveExplanations = %d, %v; want 1 (b changed meanwhile)", moved, err)
	}
	ga, _ := r.GetVM(ctx, "default", "a")
	gb, _ := r.GetVM(ctx, "default", "b")
	if ga.Status.Explanation != nil || gb.Status.Explanation == nil || gb.Status.Message != "report" {
		t.Fatalf("after the move a %+v, b %+v", ga.Status, gb.Status)
	}
	if e, err := r.GetExplanation(ctx, ga); err != nil || e == nil || e.Summary != old.Summary {
		t.Fatalf("moved: GetExplanation = %+v, %v", e, err)
	}
	if moved, err := r.MoveExplanations(ctx, []*model.VM{ga, changed}); err != nil || moved != 1 {
		t.Fatalf("second MoveExplanations = %d, %v; want 1 (b)", moved, err)
	}
	if gb, _ := r.GetVM(ctx, "default", "b"); gb.Status.Explanation != nil {
		t.Fatalf("b still carries its explanation: %+v", gb.Status)
	}
}

// TestPruneExplanations: an explanation whose VM is gone, or belongs to
// an earlier VM of that name, is deleted; the others stay, a VM placed
// after the caller's view included.
func TestPruneExplanations(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{})
	live := assignOne(t, r, "p", "live", "h1")
	assignOne(t, r, "p", "late", "h1") // placed after the caller's view was taken
	reborn := assignOne(t, r, "p", "reborn", "h1")
	put := func(key string, uid string) {
		t.Helper()
		v := encode(model.StoredExplanation{UID: uid, Explanation: &model.Explanation{Chosen: "h1"}})
		if _, _, err := r.Store().Txn(ctx, nil, []store.Op{store.Put(key, v)}); err != nil {
			t.Fatal(err)
		}
	}
	put(store.ExplanationKey("p", "gone"), "u-gone")
	put(store.ExplanationKey("p", "reborn"), "u-earlier")
	view := map[string]*model.VM{live.Key(): live, reborn.Key(): reborn}
	n, err := r.PruneExplanations(ctx, func(p, name string) *model.VM { return view[p+"/"+name] })
	if err != nil || n != 2 {
		t.Fatalf("PruneExplanations = %d, %v; want 2", n, err)
	}
	for name, want := range map[string]bool{"live": true, "late": true, "gone": false, "reborn": false} {
		_, err := r.Store().Get(ctx, store.ExplanationKey("p", name))
		if got := err == nil; got != want {
			t.Errorf("explanation of %s kept = %v, want %v (%v)", name, got, want, err)
		}
	}
}

// TestAssignSpillsExplanationsPastTheCap: a gang whose placements fit in
// one transaction of the store's cap but not with their explanations
// commits, and every explanation is stored right after.
func TestAssignSpillsExplanationsPastTheCap(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	r := New(cappedStore{st}, nil)
	mustProject(t, r, "p", model.Quota{})
	as := []Assignment{}
	allocs := map[string]model.Allocation{}
	for i := range 50 {
		v, err := r.CreateVM(ctx, mkVM("p", fmt.Sprintf("g%02d", i), 1, model.GiB))
		if err != nil {
			t.Fatal(err)
		}
		h := fmt.Sprintf("h%02d", i)
		allocs[h] = model.Allocation{}
		as = append(as, Assignment{VM: v, Host: h, Explanation: &model.Explanation{Chosen: h}})
	}
	got, ok, err := r.Assign(ctx, as, allocs, 0)
	if err != nil || !ok {
		t.Fatalf("Assign of a gang of 50 on 50 hosts = %v, %v", ok, err)
	}
	for _, v := range got.VMs {
		if e, err := r.GetExplanation(ctx, v); err != nil || e == nil || e.Chosen != v.Status.Host {
			t.Fatalf("%s: GetExplanation = %+v, %v", v.Name, e, err)
		}
	}
}

// cappedStore refuses transactions over etcd's default cap, as etcd does.
type cappedStore struct{ store.Store }

func (c cappedStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	if len(ops) > MaxTxnOps || len(conds) > MaxTxnOps {
		return false, 0, fmt.Errorf("etcdserver: too many operations in txn request (%d)", len(ops))
	}
	return c.Store.Txn(ctx, conds, ops)
}
