package controller

import (
	"context"
	"time"
)

// migrationPass runs one pass of the migration controller of g's term.
func (g *greenEnv) migrationPass() {
	g.t.Helper()
	g.sync() // as the watches would
	x := newMigrator(g.r.m, g.r.t, g.r.gate)
	if err := x.pass(context.Background()); err != nil {
		g.t.Logf("migration pass: %v", err)
	}
}

type namedStep struct {
	name string
	run  func(context.Context) error
}

// deposedSteps lists every controller of g's term, one pass each.
func deposedSteps(g *greenEnv) []namedStep {
	x := newMigrator(g.r.m, g.r.t, g.r.gate)
	return []namedStep{
		{"repair", g.r.repairOnce}, {"liveness", g.r.haPass}, {"scheduling", g.r.schedule}, {"cleanup", g.r.cleanup},
		{"energy", g.r.energyStep},
		{"energy", func(ctx context.Context) error { g.clock.Step(2 * time.Second); return g.r.energyStep(ctx) }}, {"power", g.r.powerStep}, {"balancer", g.r.balanceRound},
		{"compaction", g.r.compactEvents}, {"migration", x.pass},
	}
}
