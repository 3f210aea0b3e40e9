package controller

import (
	"context"
	"encoding/json"
	"fmt"
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

// TestRetentionHoldsOverManyCycles: a day of compaction passes while
// events and finished migrations keep arriving (some of them to hosts
// deleted since); after every pass the event log and the migrations kept
// stay within their bounds, and the unfinished migrations survive.
func TestRetentionHoldsOverManyCycles(t *testing.T) {
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	ctx := context.Background()
	cfg := e.config("a", nil)
	cfg.MaxEvents, cfg.MaxEventAge = 300, 6*time.Hour
	cfg.MaxMigrations, cfg.MigrationRetention = 50, 12*time.Hour
	cfg.CompactInterval = time.Hour
	m := New(cfg)
	r := newReconciler(m, m.newTerm(), newCache(m.log))
	putMigration := func(id, target string, phase model.MigrationPhase) {
		now := e.clock.Now()
		mg := model.Migration{Meta: model.Meta{Name: id, Project: "p", CreatedAt: now}, VM: "v", Source: "h1", Target: target, Phase: phase}
		if phase.Final() {
			mg.FinishedAt = &now
		}
		if _, _, err := e.st.Txn(ctx, nil, []store.Op{store.Put(store.MigrationKey(id), mustJSON(mg))}); err != nil {
			t.Fatal(err)
		}
	}
	for hour := range 48 {
		for i := range 40 {
			if err := e.repo.AppendEvent(ctx, model.Event{Time: e.clock.Now().Add(time.Duration(i)), Kind: "test", Object: "x"}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 10 {
			target := "gone" // a host deleted since: never confirms its clean-up
			if i%2 == 0 {
				target = "h1" // h1 lives, has not confirmed: kept until it does
			}
			putMigration(fmt.Sprintf("m%02d-%d", hour, i), target, model.MigrationFailed)
		}
		putMigration(fmt.Sprintf("run%02d", hour), "h1", model.MigrationTransferring)
		e.clock.Step(time.Hour)
		if err := r.compactEvents(ctx); err != nil {
			t.Fatal(err)
		}
		evs := e.events("")
		if len(evs) > cfg.MaxEvents {
			t.Fatalf("hour %d: %d events kept, bound %d", hour, len(evs), cfg.MaxEvents)
		}
		if age := e.clock.Now().Sub(evs[0].Time); age > cfg.MaxEventAge {
			t.Fatalf("hour %d: oldest event %s old, bound %s", hour, age, cfg.MaxEventAge)
		}
		migs, _, err := e.repo.ListMigrations(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		finished, running := 0, 0
		for _, mg := range migs {
			if mg.Phase.Final() {
				finished++
				if mg.Target == "gone" && e.clock.Now().Sub(*mg.FinishedAt) >= cfg.MigrationRetention {
					t.Fatalf("hour %d: %s kept past the retention", hour, mg.Name)
				}
			} else {
				running++
			}
		}
		// Unconfirmed ones to a live host are kept for their agent; the
		// rest is bounded by the count and the age.
		if running != hour+1 || finished > 5*(hour+1)+cfg.MaxMigrations {
			t.Fatalf("hour %d: %d running, %d finished kept", hour, running, finished)
		}
	}
}

// TestBalancePlanStaysSmall: the plan is one value rewritten every round;
// on a large cluster it keeps at most maxPlanMoves moves and maxPlanHosts
// host lines, and says how many it left out.
func TestBalancePlanStaysSmall(t *testing.T) {
	g := newGreenEnv(t, recommend())
	const hosts = 600
	for i := range hosts {
		h := fmt.Sprintf("h%03d", i)
		g.addHost(h, 2, 16*model.GiB, nil)
		g.putVM("v"+h, h, 1, 5, nil) // all light: consolidation everywhere
		g.setHostUsage(h, 2.5)
	}
	for round := range 3 {
		g.must(g.r.balanceRound)
		kv, err := g.st.Get(context.Background(), store.BalancePlanKey)
		if err != nil {
			t.Fatal(err)
		}
		p := g.plan()
		t.Logf("round %d: %d bytes, %d moves (+%d), %d hosts (+%d)", round, len(kv.Value), len(p.Moves), p.MovesOmitted, len(p.Hosts), p.HostsOmitted)
		if len(p.Hosts) > maxPlanHosts || len(p.Moves) > maxPlanMoves || len(p.Hosts)+p.HostsOmitted != hosts {
			t.Fatalf("plan keeps %d hosts (+%d omitted), %d moves", len(p.Hosts), p.HostsOmitted, len(p.Moves))
		}
		if len(kv.Value) > 256<<10 {
			t.Fatalf("stored plan is %d bytes", len(kv.Value))
		}
		g.clock.Step(10 * time.Minute)
	}
}
