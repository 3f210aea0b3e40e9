package state

import (
	"context"
	"errors"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// placedVM creates a running VM on host h1.
func placedVM(t *testing.T, r *Repo, name string) *model.VM {
	t.Helper()
	ctx := context.Background()
	if _, err := r.CreateVM(ctx, mkVM("default", name, 2, model.GiB)); err != nil {
		t.Fatal(err)
	}
	vm, err := r.UpdateVM(ctx, "default", name, func(v *model.VM) error {
		v.Status.Host, v.Status.Phase = "h1", model.PhaseRunning
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func newMigration(vm *model.VM) *model.Migration {
	return &model.Migration{Meta: model.Meta{Project: vm.Project}, VM: vm.Name, Source: "h1", Target: "h2",
		Mode: model.MigrationLive, Spec: vm.Spec}
}

func TestMigrationTransactions(t *testing.T) {
	for _, end := range []string{"switch-over", "fail"} {
		t.Run(end, func(t *testing.T) {
			r := newRepo(t)
			ctx := context.Background()
			mustProject(t, r, "default", model.Quota{})
			vm := placedVM(t, r, "a")
			vm, err := r.UpdateVM(ctx, "default", "a", func(v *model.VM) error {
				v.Spec.Placement.Host = "h1"                            // created with --host h1
				v.Status.Owner = &model.DiskOwner{Host: "h1", Epoch: 3} // restarted here by HA once
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			m, err := r.CreateMigration(ctx, newMigration(vm))
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := r.GetVM(ctx, "default", "a"); got.Status.Migration != m.Name {
				t.Fatalf("VM not marked: %+v", got.Status)
			}
			if _, err := r.CreateMigration(ctx, newMigration(vm)); !errors.Is(err, ErrMigrating) {
				t.Fatalf("second migration: %v, want ErrMigrating", err)
			}
			if _, err := r.HoldTarget(ctx, m.Name, nil); err != nil {
				t.Fatal(err)
			}
			a2, _ := r.GetAllocation(ctx, "h2")
			if !a2.VMs["default/a"] || a2.Used.Memory != model.GiB {
				t.Fatalf("hold not taken: %+v", a2)
			}
			switch end {
			case "switch-over":
				if _, err := r.SwitchOver(ctx, m.Name, &model.MigrationResult{DowntimeMs: 20}); err != nil {
					t.Fatal(err)
				}
				got, _ := r.GetVM(ctx, "default", "a")
				a1, _ := r.GetAllocation(ctx, "h1")
				a2, _ = r.GetAllocation(ctx, "h2")
				if got.Status.Host != "h2" || got.Status.Migration != "" || a1.VMs["default/a"] || a1.Used.Memory != 0 ||
					!a2.VMs["default/a"] || a2.Used.Memory != model.GiB {
					t.Fatalf("after switch-over: vm %+v, h1 %+v, h2 %+v", got.Status, a1, a2)
				}
				if got.Spec.Placement.Host != "h2" {
					t.Fatalf("the pin stayed on %q; it must follow the VM to h2", got.Spec.Placement.Host)
				}
				if o := got.Status.Owner; o == nil || *o != (model.DiskOwner{Host: "h2", Epoch: 4}) {
					t.Fatalf("the disks' owner after switch-over: %+v; want h2, epoch 4 (h2 could not start the VM again)", o)
				}
			case "fail":
				if _, err := r.FinishMigration(ctx, m.Name, model.MigrationFailed, "target down", "note"); err != nil {
					t.Fatal(err)
				}
				got, _ := r.GetVM(ctx, "default", "a")
				a1, _ := r.GetAllocation(ctx, "h1")
				a2, _ = r.GetAllocation(ctx, "h2")
				if got.Status.Host != "h1" || got.Status.Migration != "" || got.Status.Message != "note" ||
					!a1.VMs["default/a"] || a2.VMs["default/a"] || a2.Used.Memory != 0 || got.Spec.Placement.Host != "h1" {
					t.Fatalf("after failure: vm %+v %+v, h1 %+v, h2 %+v", got.Spec.Placement, got.Status, a1, a2)
				}
				if o := got.Status.Owner; o == nil || *o != (model.DiskOwner{Host: "h1", Epoch: 3}) {
					t.Fatalf("the disks' owner after a failed migration: %+v; want h1, epoch 3", o)
				}
			}
			fm, _ := r.GetMigration(ctx, m.Name)
			if !fm.Phase.Final() || fm.FinishedAt == nil || fm.HoldTarget {
				t.Fatalf("migration after the end: %+v", fm)
			}
			evs, _, _ := r.ListEvents(ctx, 0, "")
			seen := map[string]bool{}
			for _, e := range evs {
				seen[e.Kind] = true
			}
			if !seen["migration.pending"] || !(seen["migration.completed"] || seen["migration.failed"]) {
				t.Errorf("events %v", seen)
			}
		})
	}
}
