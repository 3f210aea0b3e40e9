package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
)

// waitGuestAgent pings the VM's agent until it answers.
func waitGuestAgent(t testing.TB, d *Driver, id string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		err := d.GuestPing(ctx, id)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest agent never answered: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// sessionHolds reads every allocated extent of disk in sess and reports
// whether it contains token.
func sessionHolds(t testing.TB, sess hypervisor.BackupSession, disk string, token []byte) bool {
	t.Helper()
	ctx := context.Background()
	exts, err := sess.Extents(ctx, disk)
	mustDo(t, "Extents", err)
	buf := make([]byte, 1<<20)
	for _, e := range exts {
		if e.Zero {
			continue
		}
		for off := e.Offset; off < e.Offset+e.Length; off += int64(len(buf)) {
			p := buf[:min(int64(len(buf)), e.Offset+e.Length-off)]
			mustDo(t, "ReadAt", sess.ReadAt(ctx, disk, p, off))
			if bytes.Contains(p, token) {
				return true
			}
		}
	}
	return false
}

// TestGuestAgentPingAndFreeze boots the test guest with Debian's real
// qemu-ga on the VM's guest-agent channel, with an ext2 file system on
// its disk and periodic writeback off: a file written without sync is
// only in the guest's page cache. A backup point without a freeze does
// not hold it (crash-consistent); with the freeze it does
// (application-consistent: the agent flushed the file system), and the
// guest is thawed afterwards.
func TestGuestAgentPingAndFreeze(t *testing.T) {
	t.Parallel()
	guest.Require(t)
	g := guest.RequireQGA(t)
	guest.AcquireSlot(t)
	d := newDriver(t, testConfig(t, ""))
	ctx := context.Background()
	cfg := vmConfig(g, "qga", "vpool.datafs=/dev/vda", "vpool.nowriteback=1")
	cfg.Spec.Disks[0].Size = 64 * model.MiB
	// The qemu-ga guest's initramfs unpacks to about 13 MiB beside the
	// kernel's: at the default 128 MiB the kernel's crypto self-tests ran
	// out of memory during boot (CI, kernel 6.1.0-57).
	cfg.Spec.Memory = 256 * model.MiB
	mustDo(t, "Create", d.Create(ctx, cfg))
	mustDo(t, "Start", d.Start(ctx, cfg.ID))
	waitReady(t, d, cfg.ID)
	for _, m := range []string{guest.QGAMarker, guest.DataFSMarker} {
		if len(guest.Lines(d.SerialLog(cfg.ID), m)) == 0 {
			t.Fatalf("the guest did not print %s; serial log: %s", m, tail(readAll(d.SerialLog(cfg.ID)), 3000))
		}
	}
	waitGuestAgent(t, d, cfg.ID)

	token := fmt.Sprintf("vpool-freeze-token-%d", time.Now().UnixNano())
	res, err := d.GuestExec(ctx, cfg.ID, "/bin/sh", "-c", "echo "+token+" >/data/token")
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("writing the token in the guest: %+v, %v", res, err)
	}

	// Without a freeze the point is crash-consistent: the file is still
	// in the guest's page cache.
	t0 := time.Now()
	sess, err := d.OpenBackup(ctx, cfg.ID, hypervisor.BackupRequest{Checkpoint: "nofreeze"})
	mustDo(t, "OpenBackup", err)
	plainOpen := time.Since(t0)
	if c := sess.(hypervisor.BackupConsistencyReporter).Consistency(); c.Application {
		t.Fatalf("consistency without a freeze: %+v", c)
	}
	if sessionHolds(t, sess, "root", []byte(token)) {
		t.Fatal("the token reached the disk without a freeze: the test cannot tell a freeze from none (writeback not off?)")
	}
	mustDo(t, "Close", sess.Close(ctx, true))

	t0 = time.Now()
	sess, err = d.OpenBackup(ctx, cfg.ID, hypervisor.BackupRequest{Checkpoint: "freeze", Since: "nofreeze", Freeze: true})
	mustDo(t, "OpenBackup with freeze", err)
	t.Logf("opening the point: %v without a freeze, %v with freeze + thaw", plainOpen.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	c := sess.(hypervisor.BackupConsistencyReporter).Consistency()
	if !c.Application || c.FrozenFilesystems < 1 {
		t.Fatalf("consistency with a freeze: %+v, want application-consistent with /data frozen", c)
	}
	if !sessionHolds(t, sess, "root", []byte(token)) {
		t.Fatal("the frozen point does not hold the file written before it")
	}
	mustDo(t, "Close", sess.Close(ctx, true))

	// Thawed: the guest writes to /data again.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err = d.GuestExec(wctx, cfg.ID, "/bin/sh", "-c", "echo after >/data/after && sync && cat /data/after")
	if err != nil || res.ExitCode != 0 || string(bytes.TrimSpace(res.Stdout)) != "after" {
		t.Fatalf("writing after the backup: %+v, %v (still frozen?)", res, err)
	}

	if err := d.GuestPing(ctx, "test.absent"); err == nil {
		t.Fatal("ping of an unknown VM succeeded")
	}
	mustDo(t, "Stop", d.Stop(ctx, cfg.ID, 20*time.Second))
	if err := d.GuestPing(ctx, cfg.ID); !errors.Is(err, hypervisor.ErrNoGuestAgent) {
		t.Fatalf("ping of a stopped VM: %v, want ErrNoGuestAgent", err)
	}
}
