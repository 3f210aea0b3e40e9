package qemu

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

func hmp(t *testing.T, d *Driver, id, cmd string) string {
	v, _ := d.get(id)
	var out string
	v.proc.qmp.Execute(context.Background(), "human-monitor-command", qmp.Args{"command-line": cmd}, &out)
	return out
}

func jitLine(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "TB count") || strings.HasPrefix(l, "TB flush") || strings.HasPrefix(l, "gen code size") {
			keep = append(keep, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(keep, "; ")
}

func TestExploreStall(t *testing.T) {
	if os.Getenv("VPOOL_EXPLORE") == "" {
		t.Skip("exploration")
	}
	g := heavy(t)
	if os.Getenv("VPOOL_EXPLORE_LOAD") != "" {
		hostLoad(t, 2)
	}
	a, b := migPair(t, true, "")
	if os.Getenv("VPOOL_EXPLORE_NOCG") != "" {
		dirs := testCA(t, "src", "dst")
		mk := func(h string) *Driver {
			c := testConfig(t, "")
			c.MigrationTLSDir = dirs[h]
			c.NoCgroups = true
			return newDriver(t, c)
		}
		a, b = mk("src"), mk("dst")
	}
	cfg := vmConfig(g, "explore", "vpool.tickms=100", "vpool.dirty=32", "vpool.dirtyrate=64", "vpool.verify=1")
	cfg.Spec.Memory = 192 * model.MiB
	bootGuest(t, a, cfg)
	ctx := context.Background()
	awaitVerified(t, a, cfg.ID, 0)
	for i := 0; i < 3; i++ {
		t.Logf("source jit: %s", jitLine(hmp(t, a, cfg.ID, "info jit")))
		time.Sleep(time.Second)
	}
	// local stop/cont
	for i := 0; i < 3; i++ {
		v, _ := a.get(cfg.ID)
		t0 := time.Now()
		v.proc.qmp.Stop(ctx)
		time.Sleep(100 * time.Millisecond)
		v.proc.qmp.Cont(ctx)
		n := ticks(a.SerialLog(cfg.ID))
		for ticks(a.SerialLog(cfg.ID)) == n {
			time.Sleep(2 * time.Millisecond)
		}
		t.Logf("local stop 100ms/cont: next tick %v after cont", time.Since(t0)-100*time.Millisecond)
		time.Sleep(time.Second)
	}
	src, dst := a, b
	for i := 0; i < 4; i++ {
		addr, err := dst.MigrateIn(ctx, cfg)
		mustDo(t, "MigrateIn", err)
		res, err := src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, nil)
		mustDo(t, "MigrateOut", err)
		t.Logf("move %d: pause %v gap %v; target jit now: %s", i, res.Pause, res.GuestGap, jitLine(hmp(t, dst, cfg.ID, "info jit")))
		for j := 0; j < 3; j++ {
			time.Sleep(time.Second)
			t.Logf("  +%ds target jit: %s", j+1, jitLine(hmp(t, dst, cfg.ID, "info jit")))
		}
		src, dst = dst, src
	}
}
