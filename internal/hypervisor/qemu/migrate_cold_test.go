package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// diskFile is the first layer file of disk name of VM id on d (a disk
// without snapshots has only that one).
func diskFile(d *Driver, id, name string) string {
	return filepath.Join(d.cfg.Pools["default"], id, name+".0.qcow2")
}

// qemuIO runs one qemu-io command on a qcow2 file that no QEMU has open
// and fails the test when it fails (a pattern mismatch included).
func qemuIO(t testing.TB, file, cmd string) {
	t.Helper()
	out, err := exec.Command("qemu-io", "-f", "qcow2", "-c", cmd, file).CombinedOutput()
	if err != nil || strings.Contains(string(out), "failed") {
		t.Fatalf("qemu-io -c %q %s: %v\n%s", cmd, file, err, out)
	}
}

// withDataDisk adds a local data disk of size to cfg.
func withDataDisk(cfg hypervisor.VMConfig, size model.Bytes) hypervisor.VMConfig {
	cfg.Spec.Disks = append(cfg.Spec.Disks, model.Disk{Name: "data", Size: size})
	return cfg
}

func TestColdMigrationLocalDiskTLS(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	src, dst := migPair(t, true, "")
	ctx := context.Background()
	cfg := withDataDisk(vmConfig(g, "coldtls"), 64*model.MiB)
	mustDo(t, "Create", src.Create(ctx, cfg))
	qemuIO(t, diskFile(src, cfg.ID, "data"), "write -P 0x5a 0 1M")
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	var (
		stages []string
		last   hypervisor.MigrationProgress
	)
	res, err := src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, func(p hypervisor.MigrationProgress) {
		if len(stages) == 0 || stages[len(stages)-1] != p.Stage {
			stages = append(stages, p.Stage)
		}
		last = p
	})
	mustDo(t, "MigrateOut", err)
	t.Logf("result %+v, stages %v, last progress %+v (cgroups: %v)", res, stages, last, src.cg != nil)
	if !res.Cold || !res.TLS || res.Downtime != 0 || res.RAMBytes != 0 || res.DiskBytes < int64(model.MiB) ||
		res.Bytes != res.DiskBytes || res.Total <= 0 || res.Stage != hypervisor.MigrationStageDisks || len(res.SharedDisks) != 0 {
		t.Fatalf("result %+v", res)
	}
	if len(stages) != 1 || stages[0] != hypervisor.MigrationStageDisks || last.DiskTransferred != res.DiskBytes || last.DiskTotal != res.DiskBytes {
		t.Fatalf("stages %v, last progress %+v", stages, last)
	}
	assertGone(t, src, cfg.ID)
	if st := state(t, dst, cfg.ID); st != hypervisor.StateStopped {
		t.Fatalf("target state %q, want stopped", st)
	}
	if _, err := os.Stat(filepath.Join(dst.vmDir(cfg.ID), incomingMarker)); err == nil {
		t.Fatal("incoming marker left after arrival")
	}
	if pids := dst.ourQEMUs()[cfg.ID]; len(pids) > 0 {
		t.Fatalf("target QEMU still running: %v", pids)
	}
	file := diskFile(dst, cfg.ID, "data")
	qemuIO(t, file, "read -P 0x5a 0 1M")
	qemuIO(t, file, "read -P 0 1M 1M")
	mustDo(t, "Start on the target", dst.Start(ctx, cfg.ID))
	waitReady(t, dst, cfg.ID)
}

func TestColdMigrationSharedStorage(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	shared := shortTempDir(t)
	src, dst := migPair(t, false, shared)
	ctx := context.Background()
	cfg := vmConfig(g, "coldshared")
	mustDo(t, "Create", src.Create(ctx, cfg))
	file := diskFile(src, cfg.ID, "root")
	before, err := os.Stat(file)
	mustDo(t, "stat", err)
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	res, err := src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, nil)
	mustDo(t, "MigrateOut", err)
	t.Logf("result %+v", res)
	if !res.Cold || res.TLS || res.Bytes != 0 || len(res.SharedDisks) != 1 || res.SharedDisks[0] != "root" {
		t.Fatalf("result %+v", res)
	}
	after, err := os.Stat(file)
	if err != nil || !os.SameFile(before, after) {
		t.Fatalf("the shared disk file did not stay (%v)", err)
	}
	assertOwner(t, dst, shared, cfg.ID)
	assertGone(t, src, cfg.ID)
	if st := state(t, dst, cfg.ID); st != hypervisor.StateStopped {
		t.Fatalf("target state %q, want stopped", st)
	}
	deleteOwner(t, dst, cfg.ID, file)
}

// TestColdMigrationKillTarget crashes a VM, then kills the target's QEMU
// during its cold copy: the source stays crashed and boots, the target
// keeps nothing.
func TestColdMigrationKillTarget(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	src, dst := migPair(t, true, "")
	ctx := context.Background()
	cfg := withDataDisk(vmConfig(g, "coldkill"), 64*model.MiB)
	mustDo(t, "Create", src.Create(ctx, cfg))
	fillDisk(t, src, diskFile(src, cfg.ID, "data"), 64<<20)
	mustDo(t, "Start", src.Start(ctx, cfg.ID))
	syscall.Kill(pidOf(t, src, cfg.ID), syscall.SIGKILL)
	for deadline := time.Now().Add(30 * time.Second); state(t, src, cfg.ID) != hypervisor.StateCrashed; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("source state %q after its QEMU was killed", state(t, src, cfg.ID))
		}
	}
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	victim := pidOf(t, dst, cfg.ID)
	var once sync.Once
	opts := hypervisor.MigrateOptions{BandwidthBps: 16 << 20} // ≈ 4 s for the data disk
	_, err = src.MigrateOut(ctx, cfg.ID, addr, opts, func(p hypervisor.MigrationProgress) {
		if p.DiskTransferred > 0 {
			once.Do(func() { syscall.Kill(victim, syscall.SIGKILL) })
		}
	})
	if err == nil {
		t.Fatal("MigrateOut succeeded although the target QEMU was killed")
	}
	t.Logf("MigrateOut: %v", err)
	waitGone(t, dst, cfg.ID)
	assertGone(t, dst, cfg.ID)
	if err := dst.Delete(ctx, cfg.ID); !errors.Is(err, hypervisor.ErrNotFound) {
		t.Fatalf("Delete on the target after the failure: %v, want ErrNotFound", err)
	}
	if st := state(t, src, cfg.ID); st != hypervisor.StateCrashed {
		t.Fatalf("source state %q after the failed cold migration, want crashed", st)
	}
	if pids := src.ourQEMUs()[cfg.ID]; len(pids) > 0 {
		t.Fatalf("the source's helper QEMU is still running: %v", pids)
	}
	if _, err := os.Stat(filepath.Join(src.vmDir(cfg.ID), helperSerialLog)); err == nil {
		t.Fatal("helper serial log left behind")
	}
	mustDo(t, "Start the source", src.Start(ctx, cfg.ID))
	waitReady(t, src, cfg.ID)
}

// TestColdHelperDroppedAtStart: the agent dies while a cold migration's
// helper QEMU runs; the next driver on the state dir kills the helper and
// lists the VM as it was.
func TestColdHelperDroppedAtStart(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	cfgD := testConfig(t, shortTempDir(t))
	d1, err := New(cfgD)
	mustDo(t, "New", err)
	ctx := context.Background()
	cfg := vmConfig(g, "coldorphan")
	mustDo(t, "Create", d1.Create(ctx, cfg))
	v, err := d1.lock(cfg.ID)
	mustDo(t, "lock", err)
	mustDo(t, "start helper", d1.startLocked(ctx, v, startOpts{helper: true}))
	v.mu.Unlock()
	if st := state(t, d1, cfg.ID); st != hypervisor.StateStopped {
		t.Fatalf("state with a helper running: %q, want stopped", st)
	}
	helper := d1.ourQEMUs()[cfg.ID]
	if len(helper) != 1 {
		t.Fatalf("helper QEMUs %v, want one", helper)
	}
	d1.Close() // the agent dies mid-copy; the helper lives on
	d2 := newDriver(t, cfgD)
	if st := state(t, d2, cfg.ID); st != hypervisor.StateStopped {
		t.Fatalf("state after restart: %q, want stopped", st)
	}
	for _, p := range helper {
		for deadline := time.Now().Add(10 * time.Second); pidAlive(p) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		if pidAlive(p) {
			t.Errorf("helper QEMU %d still alive", p)
		}
	}
	mustDo(t, "Start", d2.Start(ctx, cfg.ID))
	waitReady(t, d2, cfg.ID)
}
