package qemu

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
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

// TestMigrationPostCopyRecovers breaks the post-copy stream (QMP
// migrate-pause on the source, as a dropped connection does) while the
// target pulls the rest of memory: the driver recovers it
// (migrate-recover on a port the target's QEMU names, migrate resume on
// the source), the migration completes, and the guest, which stamps and
// checks every page, finds no lost write.
func TestMigrationPostCopyRecovers(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	src, dst := migPair(t, true, "")
	ctx := context.Background()
	cfg := vmConfig(g, "migrecover", "vpool.tickms=100", "vpool.dirty=64", "vpool.verify=1")
	cfg.Spec.Memory = 256 * model.MiB
	bootGuest(t, src, cfg)
	awaitVerified(t, src, cfg.ID, 0)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	v, _ := src.get(cfg.ID)
	q := v.proc.qmp
	// Post-copy runs unthrottled by default: slow it so the break lands
	// while pages are still pulled.
	mustDo(t, "max-postcopy-bandwidth", q.Execute(ctx, "migrate-set-parameters", qmp.Args{"max-postcopy-bandwidth": 8 << 20}, nil))
	reports, paused := 0, make(chan error, 1)
	opts := hypervisor.MigrateOptions{DowntimeLimit: time.Millisecond, BandwidthBps: 32 << 20, MaxBandwidthBps: 32 << 20, AllowPostCopy: true}
	res, err := src.MigrateOut(ctx, cfg.ID, addr, opts, func(p hypervisor.MigrationProgress) {
		if p.Stage == hypervisor.MigrationStagePostCopy {
			if reports++; reports == 2 {
				go func() { paused <- q.Execute(ctx, "migrate-pause", nil, nil) }()
			}
		}
	})
	mustDo(t, "MigrateOut", err)
	select {
	case err := <-paused:
		mustDo(t, "migrate-pause", err)
	default:
		t.Fatalf("post-copy ended before the stream could be broken (%d reports): %+v", reports, res)
	}
	t.Logf("result %+v", res)
	if !res.PostCopy || !strings.Contains(strings.Join(res.Notes, " "), "the stream broke and was recovered") {
		t.Fatalf("result %+v: want post-copy with a recovery noted", res)
	}
	awaitVerified(t, dst, cfg.ID, 1)
	assertGone(t, src, cfg.ID)
}
