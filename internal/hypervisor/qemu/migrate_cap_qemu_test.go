package qemu

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// TestMigrationCapFailsCleanly: a guest rewriting 96 MiB cannot be sent
// within a 5 ms cap over a 32 MiB/s stream that may not grow, without
// post-copy. The driver must not switch over above the cap: it escalates
// (the cap, then throttling), then fails naming the cap, and the guest
// keeps running on the source with nothing left on the target.
func TestMigrationCapFailsCleanly(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	src, dst := migPair(t, true, "")
	ctx := context.Background()
	cfg := vmConfig(g, "migcap", "vpool.tickms=100", "vpool.dirty=96")
	cfg.Spec.Memory = 256 * model.MiB
	bootGuest(t, src, cfg)
	waitDirty(t, src, cfg.ID)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	opts := hypervisor.MigrateOptions{DowntimeLimit: 5 * time.Millisecond, BandwidthBps: 32 << 20, MaxBandwidthBps: 32 << 20,
		StageTimeout: 5 * time.Second, Timeout: 2 * time.Minute}
	var stages []string
	res, err := src.MigrateOut(ctx, cfg.ID, addr, opts, func(p hypervisor.MigrationProgress) {
		if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
			stages = append(stages, p.Stage)
		}
	})
	t.Logf("MigrateOut: %v; stages %v; result %+v", err, stages, res)
	if err == nil || !strings.Contains(err.Error(), "within the 5ms downtime cap") {
		t.Fatalf("MigrateOut = %v, want a failure naming the 5ms cap", err)
	}
	if !contains(stages, hypervisor.MigrationStageAutoConverge) || contains(stages, hypervisor.MigrationStageSwitchover) {
		t.Fatalf("stages %v: want the throttle tried and no switch-over", stages)
	}
	if err := dst.Delete(ctx, cfg.ID); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("Delete target: %v", err)
	}
	assertGone(t, dst, cfg.ID)
	if st := state(t, src, cfg.ID); st != hypervisor.StateRunning {
		t.Fatalf("source state %s after the refused switch-over", st)
	}
	waitTicks(t, src.SerialLog(cfg.ID), ticks(src.SerialLog(cfg.ID)))
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
