package controller

import (
	"context"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// TestMigrationLostOnBothSidesEndsAtOnce: the source's host crashed and
// came back without the VM (it reports the VM gone) and the target, up,
// says it does not have it either (test/chaos found this): nothing is in
// flight, so the migration ends at the next pass — before, it waited for
// the 30-minute transfer timeout with the VM down, marked as migrating,
// so that its host would not recreate it.
func TestMigrationLostOnBothSidesEndsAtOnce(t *testing.T) {
	g := newGreenEnv(t, recommend())
	g.addHost("h1", 8, 16*model.GiB, nil)
	g.addHost("h2", 8, 16*model.GiB, nil)
	g.putVM("a", "h1", 1, 10, nil)
	mg := g.transferringMigration()
	ctx := context.Background()
	for _, step := range []struct {
		name  string
		apply func(*model.Migration)
		final bool
	}{
		{"source gone", func(m *model.Migration) { m.SourceGone = true }, false},
		{"target absent too", func(m *model.Migration) { m.TargetAbsent = true }, true},
	} {
		if _, err := g.repo.UpdateMigration(ctx, mg.Name, func(m *model.Migration) error { step.apply(m); return nil }); err != nil {
			t.Fatal(err)
		}
		g.migrationPass()
		got, err := g.repo.GetMigration(ctx, mg.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got.Phase.Final() != step.final {
			t.Fatalf("after %s: %s (%s), want final %v", step.name, got.Phase, got.Reason, step.final)
		}
	}
	if vm := g.vm("a"); vm.Status.Migration != "" || vm.Status.Host != "h1" {
		t.Errorf("the VM after the migration ended: host %s, migration %q; want h1 and none (its host recreates it)", vm.Status.Host, vm.Status.Migration)
	}
	if a, _ := g.repo.GetAllocation(ctx, "h2"); len(a.VMs) != 0 {
		t.Errorf("h2 keeps the hold: %v", a.VMs)
	}
}
