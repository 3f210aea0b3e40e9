package devenv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestBackupAcrossMigration: a VM written before and after a live
// migration. The first backup after it is either incremental holding both
// changes (the change tracking travelled: the sim driver moves it with
// the VM) or full and says why (QEMU: persistent bitmaps stay in the
// source's image, the disk mirror does not carry them); never an
// incremental that misses the change made before the move. The next
// backup is incremental on the new host, and a restore of the chain is
// byte-exact.
func TestBackupAcrossMigration(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	dir := t.TempDir()
	a := startCluster(t, devenv.ServerConfig{Store: st, BackupDirs: []string{dir}, Backup: controller.BackupConfig{Interval: 100 * time.Millisecond}}, 2)
	p := api.DefaultProject
	if _, err := a.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "main", Path: filepath.Join(dir, "main"), Key: backupKey()}); err != nil {
		t.Fatal(err)
	}
	const size = 32 << 20
	if _, err := a.c.CreateVM(ctx, p, api.VMCreateRequest{Name: "app", Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB,
		Disks: []model.Disk{{Name: "root", Size: size}}}}); err != nil {
		t.Fatal(err)
	}
	vm := a.waitPhase("app", model.PhaseRunning)
	from := vm.Status.Host
	to := "h1"
	if from == "h1" {
		to = "h2"
	}
	write := func(host string, off int64, n int) {
		buf := make([]byte, n)
		rand.Read(buf)
		if err := a.hosts[host].Driver().WriteDisk(ctx, p+".app", "root", off, buf); err != nil {
			t.Fatal(err)
		}
	}
	backupNow := func() *model.Backup {
		b, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "app", Repo: "main"})
		if err != nil {
			t.Fatal(err)
		}
		return waitBackup(t, a.c, p, b.Name)
	}
	write(from, 0, 4<<20)
	if b := backupNow(); b.Kind != "full" {
		t.Fatalf("first backup: %s", b.Kind)
	}
	write(from, 20<<20, 1<<20) // after the backup, before the move
	m, err := a.c.MigrateVM(ctx, p, api.MigrationRequest{VM: "app", To: to})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	m, err = a.c.WaitMigration(wctx, m.Name, nil)
	cancel()
	if err != nil || m.Phase != model.MigrationCompleted {
		t.Fatalf("migration: %v %+v", err, m)
	}
	write(to, 8<<20, 1<<20)
	after := backupNow()
	switch {
	case after.Kind == "full" && strings.Contains(after.Reason, "migrated") && after.Stats.ReadBytes >= 6<<20:
	case after.Kind == "incremental" && after.Stats.ReadBytes >= 2<<20 && after.Stats.ReadBytes <= 4<<20:
	default:
		t.Fatalf("backup after the migration: %s reading %d bytes, reason %q; want an incremental with both changes or a full saying why",
			after.Kind, after.Stats.ReadBytes, after.Reason)
	}
	t.Logf("after the migration: %s, %d bytes read, %q", after.Kind, after.Stats.ReadBytes, after.Reason)
	write(to, 16<<20, 1<<20)
	next := backupNow()
	if next.Kind != "incremental" || next.Parent != after.Name || next.Stats.ReadBytes > 2<<20 {
		t.Fatalf("the next backup on the new host: %s of %q reading %d bytes", next.Kind, next.Parent, next.Stats.ReadBytes)
	}
	want := simImage(t, a.hosts[to], p+".app", size)
	rs, err := a.c.RestoreBackup(ctx, p, next.Name, api.RestoreRequest{As: "app-copy"})
	if err != nil {
		t.Fatal(err)
	}
	rs = waitRestore(t, a.c, p, rs.Name)
	copyVM := a.waitPhase("app-copy", model.PhaseStopped)
	if got := simImage(t, a.hosts[copyVM.Status.Host], p+".app-copy", size); !bytes.Equal(got, want) {
		t.Fatal("the restore of the post-migration chain differs from the disk")
	}
}
