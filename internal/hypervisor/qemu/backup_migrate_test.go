package qemu

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/backup"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/hypervisor"
)

// TestBackupAfterLiveMigration: a VM backed up on one host, written,
// live-migrated with its local disk (mirror over NBD) and written again.
// The first backup on the new host must hold both writes: incremental if
// the change tracking travelled, or full and saying why. Its chunk list
// must equal that of a fresh full backup of the same disk (chunk names
// are content hashes: equal lists are equal disks), and the backup after
// it is incremental on the new host.
func TestBackupAfterLiveMigration(t *testing.T) {
	g := heavy(t)
	src, dst := migPair(t, false, "")
	ctx := context.Background()
	cfg := vmConfig(g, "bkmig")
	bootGuest(t, src, cfg)
	rp, err := repo.Create(ctx, &repo.Dir{Root: filepath.Join(t.TempDir(), "repo")}, repo.Options{Key: repo.GenerateKey(), Cluster: "c"})
	mustDo(t, "repo", err)
	first, err := backup.Backup(ctx, src, cfg.ID, rp, backup.Job{ID: "b1"})
	mustDo(t, "first backup", err)
	guestWrite(t, src, cfg.ID, "root", 64<<20, 1<<20, 0x5a) // before the move
	addr, err := dst.MigrateIn(ctx, cfg)
	mustDo(t, "MigrateIn", err)
	_, err = src.MigrateOut(ctx, cfg.ID, addr, hypervisor.MigrateOptions{}, nil)
	mustDo(t, "MigrateOut", err)
	guestWrite(t, dst, cfg.ID, "root", 512<<20, 1<<20, 0xa5) // after it

	after, err := backup.Backup(ctx, dst, cfg.ID, rp, backup.Job{ID: "b2", Parent: first})
	mustDo(t, "backup after the migration", err)
	t.Logf("after the migration: %s, %d bytes read, reason %q", after.Kind, after.Stats.ReadBytes, after.Reason)
	switch {
	case after.Kind == "full" && strings.Contains(after.Reason, "migrated"):
	case after.Kind == "incremental" && after.Stats.ReadBytes >= 2<<20:
	default:
		t.Fatalf("backup after the migration: %s reading %d bytes, reason %q; want a full saying why or an incremental with both writes",
			after.Kind, after.Stats.ReadBytes, after.Reason)
	}
	fresh, err := backup.Backup(ctx, dst, cfg.ID, rp, backup.Job{ID: "b3"})
	mustDo(t, "fresh full backup", err)
	if !slices.Equal(after.Disks[0].Chunks, fresh.Disks[0].Chunks) {
		t.Fatal("the backup after the migration differs from a fresh full backup of the same disk")
	}
	guestWrite(t, dst, cfg.ID, "root", 256<<20, 1<<20, 0x33)
	next, err := backup.Backup(ctx, dst, cfg.ID, rp, backup.Job{ID: "b4", Parent: fresh})
	mustDo(t, "next backup", err)
	if next.Kind != "incremental" || next.Stats.ReadBytes > 2<<20 {
		t.Fatalf("the next backup on the new host: %s reading %d bytes", next.Kind, next.Stats.ReadBytes)
	}
}
