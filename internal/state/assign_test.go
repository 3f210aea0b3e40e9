package state

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

func TestAssignAllOrNothingUnderGuards(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		stale func(r *Repo) // writes something the guards compare
		ok    bool
	}{
		{"guards hold", func(*Repo) {}, true},
		{"a VM changed", func(r *Repo) {
			if _, err := r.UpdateVM(ctx, "p", "b", func(v *model.VM) error { v.Status.Message = "x"; return nil }); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"an allocation changed", func(r *Repo) {
			if _, err := r.UpdateAllocation(ctx, "h2", func(a *model.Allocation) error { a.Used.CPUs++; return nil }); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"a host was cordoned", func(r *Repo) {
			if _, err := r.UpsertHost(ctx, "h2", func(*model.Host, bool) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if _, err := r.UpdateHostFilters(ctx, "h2", func(h *model.Host) error { h.Cordoned = true; return nil }); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"the policy changed", func(r *Repo) {
			if _, err := r.PutPolicy(ctx, model.DefaultPolicy()); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRepo(t)
			mustProject(t, r, "p", model.Quota{})
			var vms []*model.VM
			for _, n := range []string{"a", "b"} {
				v, err := r.CreateVM(ctx, mkVM("p", n, 2, model.GiB))
				if err != nil {
					t.Fatal(err)
				}
				vms = append(vms, v)
			}
			allocs, _, err := r.ListAllocations(ctx)
			if err != nil {
				t.Fatal(err)
			}
			base := map[string]model.Allocation{}
			for h, a := range allocs {
				base[h] = *a
			}
			tc.stale(r)
			as := []Assignment{{VM: vms[0], Host: "h1", Explanation: &model.Explanation{Chosen: "h1"}}, {VM: vms[1], Host: "h2"}}
			got, ok, err := r.Assign(ctx, as, base, 0)
			if err != nil || ok != tc.ok {
				t.Fatalf("Assign = %v, %v; want ok %v", ok, err, tc.ok)
			}
			a, _ := r.GetVM(ctx, "p", "a")
			a1, _ := r.GetAllocation(ctx, "h1")
			_, explErr := r.Store().Get(ctx, store.ExplanationKey("p", "a"))
			if !tc.ok {
				if a.Status.Host != "" || len(a1.VMs) != 0 || !errors.Is(explErr, store.ErrNotFound) {
					t.Fatalf("a refused plan wrote: %+v, %+v (explanation: %v)", a.Status, a1, explErr)
				}
				return
			}
			// the explanation is kept apart from the record
			kv, _ := r.Store().Get(ctx, store.VMKey("p", "a"))
			if a.Status.Explanation != nil || got.VMs[0].Status.Explanation != nil || bytes.Contains(kv.Value, []byte(`"explanation"`)) {
				t.Fatalf("the stored record carries the explanation: %s", kv.Value)
			}
			if e, err := r.GetExplanation(ctx, a); err != nil || e == nil || e.Chosen != "h1" {
				t.Fatalf("GetExplanation = %+v, %v; want the one stored with the placement", e, err)
			}
			if a.Status.Host != "h1" || a.Status.Phase != model.PhaseCreating ||
				!a1.VMs["p/a"] || a1.Used.CPUs != 2 || got.Allocs["h2"].Revision != got.Rev || got.VMs[1].Status.Host != "h2" {
				t.Fatalf("stored %+v on %+v (returned %+v)", a.Status, a1, got)
			}
		})
	}
}

func TestCreateHeldMigration(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "default", model.Quota{})
	vm := placedVM(t, r, "a")
	refuse := errors.New("no")
	if _, err := r.CreateHeldMigration(ctx, newMigration(vm), func(*model.VM, *model.Allocation) ([]store.Cond, error) { return nil, refuse }); !errors.Is(err, refuse) {
		t.Fatalf("refused: %v", err)
	}
	if got, _ := r.GetVM(ctx, "default", "a"); got.Status.Migration != "" {
		t.Fatal("a refused migration marked the VM")
	}
	asked, hadVM := false, false
	m, err := r.CreateHeldMigration(ctx, newMigration(vm), func(v *model.VM, a *model.Allocation) ([]store.Cond, error) {
		asked, hadVM = true, a.VMs["default/a"]
		return []store.Cond{store.IfAbsent(store.PolicyKey)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := r.GetVM(ctx, "default", "a")
	a2, _ := r.GetAllocation(ctx, "h2")
	if !m.HoldTarget || got.Status.Migration != m.Name || !a2.VMs["default/a"] || a2.Used.CPUs != 2 || !asked || hadVM {
		t.Fatalf("migration %+v, VM %+v, h2 %+v", m, got.Status, a2)
	}
	if _, err := r.CreateHeldMigration(ctx, newMigration(vm), nil); !errors.Is(err, ErrMigrating) {
		t.Fatalf("second migration: %v", err)
	}
	if _, err := r.FinishMigration(ctx, m.Name, model.MigrationFailed, "x", ""); err != nil {
		t.Fatal(err)
	}
	if a2, _ := r.GetAllocation(ctx, "h2"); len(a2.VMs) != 0 {
		t.Fatalf("hold not released: %+v", a2)
	}
}

// TestPlacementMovesTheDisksOwner: a VM an HA restart once gave an owner
// record, placed again (e.g. started after a stop that released its
// host) on another host, names that host as its disks' owner: the agent
// there asks before it starts the VM.
func TestPlacementMovesTheDisksOwner(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{})
	v, err := r.CreateVM(ctx, mkVM("p", "a", 1, model.GiB))
	if err != nil {
		t.Fatal(err)
	}
	if v, err = r.UpdateVM(ctx, "p", "a", func(v *model.VM) error {
		v.Status.Owner = &model.DiskOwner{Host: "h1", Epoch: 2}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := r.Assign(ctx, []Assignment{{VM: v, Host: "h2"}}, map[string]model.Allocation{}, 0); err != nil || !ok {
		t.Fatalf("Assign = %v, %v", ok, err)
	}
	got, _ := r.GetVM(ctx, "p", "a")
	if o := got.Status.Owner; o == nil || *o != (model.DiskOwner{Host: "h2", Epoch: 3}) {
		t.Fatalf("owner after placement on h2: %+v; want h2, epoch 3", o)
	}
}
