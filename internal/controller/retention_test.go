package controller

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// transferringMigration stores a migration of VM a from h1 to h2 and
// drives it to transferring (hold taken, target address reported).
func (g *greenEnv) transferringMigration() *model.Migration {
	g.t.Helper()
	ctx := context.Background()
	vm := g.vm("a")
	mg, err := g.repo.CreateMigration(ctx, &model.Migration{Meta: model.Meta{Project: "p"}, VM: "a", Source: "h1", Target: "h2",
		Mode: model.MigrationLive, Spec: vm.Spec})
	if err != nil {
		g.t.Fatal(err)
	}
	g.migrationPass() // hold → preparing-target
	if _, err := g.repo.UpdateMigration(ctx, mg.Name, func(m *model.Migration) error { m.TargetAddr = "tcp:127.0.0.1:1"; return nil }); err != nil {
		g.t.Fatal(err)
	}
	g.migrationPass() // → transferring
	got, err := g.repo.GetMigration(ctx, mg.Name)
	if err != nil || got.Phase != model.MigrationTransferring {
		g.t.Fatalf("migration %+v (%v), want transferring", got, err)
	}
	return got
}

// TestMigrationWhoseVMLeftTheSourceEnds: the source reports the VM gone,
// the target (up) never lists it. Before issue 11 the transfer timeout
// set an abort flag that nobody could answer and the migration stayed
// transferring forever, the VM marked as migrating for good.
func TestMigrationWhoseVMLeftTheSourceEnds(t *testing.T) {
	g := newGreenEnv(t, recommend())
	g.addHost("h1", 8, 16*model.GiB, nil)
	g.addHost("h2", 8, 16*model.GiB, nil)
	g.putVM("a", "h1", 1, 10, nil)
	mg := g.transferringMigration()
	ctx := context.Background()
	if _, err := g.repo.UpdateMigration(ctx, mg.Name, func(m *model.Migration) error { m.SourceGone = true; return nil }); err != nil {
		t.Fatal(err)
	}
	g.migrationPass() // within the timeout: the target may still report arrival
	if got, _ := g.repo.GetMigration(ctx, mg.Name); got.Phase.Final() {
		t.Fatalf("ended before the timeout: %s %s", got.Phase, got.Reason)
	}
	for range 3 {
		g.clock.Step(TransferTimeout)
		g.migrationPass()
	}
	got, err := g.repo.GetMigration(ctx, mg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Phase.Final() {
		t.Fatalf("migration still %s (abort %q) after the transfer timeout", got.Phase, got.Abort)
	}
	t.Logf("%s: %s", got.Phase, got.Reason)
	if vm := g.vm("a"); vm.Status.Migration != "" {
		t.Errorf("the VM stays marked with migration %s: it can never migrate again", vm.Status.Migration)
	}
	if a, _ := g.repo.GetAllocation(ctx, "h2"); len(a.VMs) != 0 {
		t.Errorf("h2 keeps the hold: %v", a.VMs)
	}
}

// TestMigrationsOfDeletedHostsArePruned: a finished migration waits for
// its host to confirm the clean-up, but a deleted host never will.
func TestMigrationsOfDeletedHostsArePruned(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	now := e.clock.Now()
	put := func(id, target string) {
		at := now.Add(-10 * 24 * time.Hour)
		m := model.Migration{Meta: model.Meta{Name: id, Project: "p"}, VM: "v", Source: "h0", Target: target,
			Phase: model.MigrationFailed, FinishedAt: &at}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.st.Txn(context.Background(), nil, []store.Op{store.Put(store.MigrationKey(id), b)}); err != nil {
			t.Fatal(err)
		}
	}
	put("to-live-host", "h1") // h1 still has to confirm: kept
	put("to-gone-host", "hx") // hx was deleted: nobody will confirm
	m := New(e.config("a", nil))
	r := newReconciler(m, m.newTerm(), newCache(m.log))
	if err := r.compactEvents(context.Background()); err != nil {
		t.Fatal(err)
	}
	migs, _, err := e.repo.ListMigrations(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, mg := range migs {
		left = append(left, mg.Name)
	}
	if strings.Join(left, ",") != "to-live-host" {
		t.Fatalf("migrations left %v, want [to-live-host]", left)
	}
}
