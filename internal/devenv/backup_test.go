package devenv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store/memstore"
)

func backupKey() string {
	k := make([]byte, 32)
	rand.Read(k)
	return api.BackupKeyPrefix + base64.StdEncoding.EncodeToString(k) + "\n"
}

// simImage reads a whole sim disk (a full backup session of the VM,
// which drops its change tracking: use at the end or on copies).
func simImage(t *testing.T, h *sim.Host, id string, size int64) []byte {
	t.Helper()
	ctx := context.Background()
	s, err := h.Driver().OpenBackup(ctx, id, hypervisor.BackupRequest{Checkpoint: "compare"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx, false)
	out := make([]byte, size)
	if err := s.ReadAt(ctx, "root", out, 0); err != nil {
		t.Fatal(err)
	}
	return out
}

func waitBackup(t *testing.T, c *client.Client, project, id string) *model.Backup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := c.WaitBackup(ctx, project, id, nil)
	if err != nil || b.Phase != model.BackupCompleted {
		t.Fatalf("backup %s: %v %+v", id, err, b)
	}
	return b
}

func waitTask(t *testing.T, c *client.Client, id string) *model.BackupTask {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tk, err := c.WaitBackupTask(ctx, id, nil)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return tk
}

func waitRestore(t *testing.T, c *client.Client, project, id string) *model.Restore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.WaitRestore(ctx, project, id, nil)
	if err != nil || r.Phase != model.RestoreCompleted {
		t.Fatalf("restore %s: %v %+v", id, err, r)
	}
	return r
}

// TestBackupEndToEnd: two in-process clusters with sim hosts. Cluster A
// backs a VM up (full, then incremental), restores it as a new VM with a
// boot check, verifies, finds a corrupt chunk and names its backups,
// prunes by retention and collects garbage, syncs to a second
// repository; cluster B registers that one (read-only: another
// cluster's) and fails the project over from it.
func TestBackupEndToEnd(t *testing.T) {
	ctx := context.Background()
	shared := t.TempDir() // "the second site's NFS share", seen by both clusters
	stA, stB := memstore.New(), memstore.New()
	t.Cleanup(func() { stA.Close(); stB.Close() })
	fast := controller.BackupConfig{Interval: 100 * time.Millisecond}
	a := startCluster(t, devenv.ServerConfig{Store: stA, BackupDirs: []string{shared}, Backup: fast}, 1)
	b := startCluster(t, devenv.ServerConfig{Store: stB, BackupDirs: []string{shared}, Backup: fast}, 1)
	key := backupKey()
	p := api.DefaultProject

	if _, err := a.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "main", Path: "/etc/vpool-nope", Key: key}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("a path outside the backup directories: %v", err)
	}
	main, err := a.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "main", Path: filepath.Join(shared, "main"), Key: key})
	if err != nil || !main.Created || main.ReadOnly {
		t.Fatalf("create main: %+v %v", main, err)
	}
	if _, err := a.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "offsite", Path: filepath.Join(shared, "offsite"), Key: key}); err != nil {
		t.Fatal(err)
	}

	const size = 64 << 20
	// its user data is sealed in each cluster's store with that cluster's
	// key; the repository keeps it (under the repository's key) so that a
	// restore in either cluster hands it to the VM's host
	const userData = "#cloud-config\npassword: backed-up-7c2e\n"
	if _, err := a.c.CreateVM(ctx, p, api.VMCreateRequest{Name: "web1", Spec: model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB,
		Disks: []model.Disk{{Name: "root", Size: size}}, CloudInit: &model.CloudInit{UserData: userData}}}); err != nil {
		t.Fatal(err)
	}
	a.waitPhase("web1", model.PhaseRunning)
	h := a.hosts["h1"]
	checkUserData := func(h *sim.Host, id string) {
		t.Helper()
		infos, _ := h.Driver().List(ctx)
		for _, in := range infos {
			if in.ID == id {
				if ci := in.Config.Spec.CloudInit; ci == nil || ci.UserData != userData {
					t.Fatalf("%s reached its host with cloudInit %+v, want its user data", id, ci)
				}
				return
			}
		}
		t.Fatalf("%s is not on its host", id)
	}
	checkUserData(h, p+".web1")
	write := func(off int64, n int) {
		buf := make([]byte, n)
		rand.Read(buf)
		if err := h.Driver().WriteDisk(ctx, p+".web1", "root", off, buf); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 8<<20)
	b1, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "web1", Repo: "main"})
	if err != nil {
		t.Fatal(err)
	}
	b1 = waitBackup(t, a.c, p, b1.Name)
	if b1.Kind != "full" || b1.Stats.ReadBytes != 8<<20 {
		t.Fatalf("first backup %s read %d", b1.Kind, b1.Stats.ReadBytes)
	}
	if b1.Consistency != model.ConsistencyCrash || b1.ConsistencyNote == "" {
		t.Fatalf("a sim backup (no guest agent) is %q (%q), want crash with why", b1.Consistency, b1.ConsistencyNote)
	}
	// Limits are checked, then carried by the backup to its host.
	for _, bad := range []model.BackupLimits{{RateMiBps: -1}, {Workers: model.MaxBackupWorkers + 1}} {
		if _, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "web1", Repo: "main", Limits: &bad}); !client.HasCode(err, api.CodeInvalidField) {
			t.Fatalf("limits %+v: %v, want an invalid field", bad, err)
		}
	}
	if _, err := a.c.RestoreBackup(ctx, p, b1.Name, api.RestoreRequest{As: "nope", BootCheck: true, BootCheckBy: "ping"}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("bootCheckBy ping: %v, want an invalid field", err)
	}
	write(20<<20, 1<<20)
	b2, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "web1", Repo: "main", Limits: &model.BackupLimits{RateMiBps: 500, Workers: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if b2.Limits.RateMiBps != 500 || b2.Limits.Workers != 1 {
		t.Fatalf("the backup record carries limits %+v", b2.Limits)
	}
	b2 = waitBackup(t, a.c, p, b2.Name)
	if b2.Kind != "incremental" || b2.Parent != b1.Name || b2.Stats.ReadBytes > 2<<20 {
		t.Fatalf("second backup %s of %q read %d bytes for 1 MiB changed", b2.Kind, b2.Parent, b2.Stats.ReadBytes)
	}
	want := simImage(t, h, p+".web1", size) // nothing wrote since b2

	// Restore as a new VM, with a boot check.
	rs, err := a.c.RestoreBackup(ctx, p, b2.Name, api.RestoreRequest{As: "web1-copy", BootCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	rs = waitRestore(t, a.c, p, rs.Name)
	if rs.BootCheckedBy != model.BootCheckMarker {
		t.Fatalf("the sim VM's boot check went by %q, want the ready marker (sim has no guest agent)", rs.BootCheckedBy)
	}
	if rs.BytesRestored != size {
		t.Fatalf("restored %d bytes", rs.BytesRestored)
	}
	a.waitPhase("web1-copy", model.PhaseRunning)
	if got := simImage(t, h, p+".web1-copy", size); !bytes.Equal(got, want) {
		t.Fatal("the restored disk differs from the backed-up one")
	}
	checkUserData(h, p+".web1-copy")

	// Sync to the second repository, twice (the second copies nothing).
	tk, err := a.c.CreateBackupTask(ctx, api.BackupTaskRequest{Kind: "sync", Repo: "main", Target: "offsite"})
	if err != nil {
		t.Fatal(err)
	}
	if tk = waitTask(t, a.c, tk.Name); tk.Phase != model.BackupCompleted || tk.Result["backups"].(float64) != 2 {
		t.Fatalf("sync: %+v", tk)
	}
	tk, _ = a.c.CreateBackupTask(ctx, api.BackupTaskRequest{Kind: "sync", Repo: "main", Target: "offsite"})
	if tk = waitTask(t, a.c, tk.Name); tk.Result["skipped"].(float64) != 2 || tk.Result["chunks"].(float64) != 0 {
		t.Fatalf("second sync: %+v", tk.Result)
	}

	// Verify, then corrupt one chunk: verify names it and both backups.
	tk, _ = a.c.CreateBackupTask(ctx, api.BackupTaskRequest{Kind: "verify", Repo: "main"})
	if tk = waitTask(t, a.c, tk.Name); tk.Phase != model.BackupCompleted {
		t.Fatalf("verify: %+v", tk)
	}
	chunks, _ := filepath.Glob(filepath.Join(shared, "main", "chunks", "*", "*"))
	if len(chunks) != 3 {
		t.Fatalf("%d chunk files, want 3 (two shared, one new in the incremental)", len(chunks))
	}
	raws := map[string][]byte{}
	for _, c := range chunks {
		raw, _ := os.ReadFile(c)
		raws[c] = bytes.Clone(raw)
		raw[len(raw)-1] ^= 1
		os.WriteFile(c, raw, 0o600)
	}
	tk, _ = a.c.CreateBackupTask(ctx, api.BackupTaskRequest{Kind: "verify", Repo: "main"})
	tk = waitTask(t, a.c, tk.Name)
	both := 0
	for _, pr := range tk.Problems {
		if strings.Contains(pr, b1.Name) && strings.Contains(pr, b2.Name) {
			both++
		}
	}
	if tk.Phase != model.BackupFailed || len(tk.Problems) != 3 || both != 2 {
		t.Fatalf("verify of corrupt chunks: want 3 problems, 2 naming both backups: %+v", tk.Problems)
	}
	for _, c := range chunks {
		if !strings.Contains(strings.Join(tk.Problems, "\n"), filepath.Base(c)) {
			t.Fatalf("chunk %s not named: %v", filepath.Base(c), tk.Problems)
		}
		os.WriteFile(c, raws[c], 0o600)
	}

	// Retention keeps the last one; the pruned backup's index goes and GC runs.
	if _, err := a.c.SetBackupPolicy(ctx, p, false, api.BackupPolicyRequest{BackupPolicy: model.BackupPolicy{Repo: "main",
		Retention: model.Retention{KeepLast: 1}}}); err != nil {
		t.Fatal(err)
	}
	a.eventually("pruned to one backup", func() bool {
		bs, err := a.c.ListBackups(ctx, p, "web1")
		return err == nil && len(bs) == 1 && bs[0].Name == b2.Name
	})
	if _, err := os.Stat(filepath.Join(shared, "main", "index", b1.Name)); !os.IsNotExist(err) {
		t.Fatalf("the pruned backup's index is still there (%v)", err)
	}
	a.eventually("a GC ran", func() bool {
		ts, _ := a.c.ListBackupTasks(ctx)
		for _, x := range ts {
			if x.Kind == "gc" && x.Phase == model.BackupCompleted {
				return true
			}
		}
		return false
	})

	// An agent that dies during a backup: the record says running, the
	// new agent process did not start it, so it fails it; the next works.
	a.stopAgent("h1")
	orphan, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "web1", Repo: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.New(stA, nil).UpdateBackup(ctx, p, orphan.Name, func(x *model.Backup) error {
		x.Phase = model.BackupRunning
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	a.startAgent("h1")
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	orphan, err = a.c.WaitBackup(wctx, p, orphan.Name, nil)
	wcancel()
	if err != nil || orphan.Phase != model.BackupFailed || !strings.Contains(orphan.Error, "agent restarted") {
		t.Fatalf("the orphaned backup: %v %+v", err, orphan)
	}
	after, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "web1", Repo: "main"})
	if err != nil {
		t.Fatal(err)
	}
	waitBackup(t, a.c, p, after.Name)

	// Cluster B: the wrong key is refused; the right one registers the
	// repository read-only (cluster A owns it).
	if _, err := b.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "site-a", Path: filepath.Join(shared, "offsite"), Key: backupKey()}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("the wrong key: %v", err)
	}
	siteA, err := b.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "site-a", Path: filepath.Join(shared, "offsite"), Key: key})
	if err != nil || !siteA.ReadOnly || siteA.Created {
		t.Fatalf("register site-a on B: %+v %v", siteA, err)
	}
	start := time.Now()
	fo, err := b.c.Failover(ctx, api.FailoverRequest{Project: p, Repo: "site-a", BootCheck: true})
	if err != nil || len(fo.Restores) != 1 || fo.Restores[0].VM != "web1" || fo.Restores[0].Backup != b2.Name {
		t.Fatalf("failover: %+v %v", fo, err)
	}
	waitRestore(t, b.c, p, fo.Restores[0].Name)
	t.Logf("failover of 1 VM (%d MiB) took %s", size>>20, time.Since(start))
	if got := simImage(t, b.hosts["h1"], p+".web1", size); !bytes.Equal(got, want) {
		t.Fatal("the failed-over disk differs from the backed-up one")
	}
	checkUserData(b.hosts["h1"], p+".web1")
	for name, st := range map[string]*memstore.Store{"A": stA, "B": stB} {
		kvs, _, _ := st.List(ctx, "/vpool/")
		for _, kv := range kvs {
			if bytes.Contains(kv.Value, []byte("backed-up-7c2e")) {
				t.Fatalf("cluster %s's store holds the user data in clear at %s", name, kv.Key)
			}
		}
	}
	if _, err := b.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "web1", Repo: "site-a"}); !client.HasCode(err, api.CodeInvalidField) {
		t.Fatalf("a backup into another cluster's repository: %v", err)
	}
}

// TestScheduleRPO measures the recovery point a schedule gives, local and
// at the second site: the policy (written past the API's one-minute floor
// to keep the test short) backs up every 3 s and syncs each backup to
// offsite; the age of the newest completed backup's consistency point is
// sampled every 50 ms while the guest keeps writing and logged (the
// figure docs/backup.md reports; tests assert no wall-clock bound): the
// test checks that scheduled backups kept completing and reaching the
// second site.
func TestScheduleRPO(t *testing.T) {
	ctx := context.Background()
	shared := t.TempDir()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	a := startCluster(t, devenv.ServerConfig{Store: st, BackupDirs: []string{shared},
		Backup: controller.BackupConfig{Interval: 100 * time.Millisecond}}, 1)
	key := backupKey()
	for _, r := range []string{"main", "offsite"} {
		if _, err := a.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: r, Path: filepath.Join(shared, r), Key: key}); err != nil {
			t.Fatal(err)
		}
	}
	p := api.DefaultProject
	if _, err := a.c.CreateVM(ctx, p, api.VMCreateRequest{Name: "db", Spec: model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB,
		Disks: []model.Disk{{Name: "root", Size: 64 << 20}}}}); err != nil {
		t.Fatal(err)
	}
	a.waitPhase("db", model.PhaseRunning)
	const every = 3 * time.Second
	if err := state.New(st, nil).SetBackupPolicy(ctx, p, &model.BackupPolicy{Repo: "main", Every: every.String(), SyncTo: "offsite",
		Retention: model.Retention{KeepLast: 3}}); err != nil {
		t.Fatal(err)
	}
	k, _ := repo.ParseKey([]byte(key))
	off, err := repo.Open(ctx, &repo.Dir{Root: filepath.Join(shared, "offsite")}, repo.Options{Key: k, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	var worstLocal, worstOff time.Duration
	start := time.Now()
	for time.Since(start) < 15*time.Second {
		rand.Read(buf)
		a.hosts["h1"].Driver().WriteDisk(ctx, p+".db", "root", int64(time.Since(start)/time.Millisecond%200)<<18, buf)
		now := time.Now()
		bs, _ := a.c.ListBackups(ctx, p, "db")
		var newest time.Time
		for _, b := range bs {
			if b.Phase == model.BackupCompleted && b.StartedAt != nil && b.StartedAt.After(newest) {
				newest = *b.StartedAt
			}
		}
		ms, _, _ := off.Catalog(ctx)
		var newestOff time.Time
		for _, m := range ms {
			if m.CreatedAt.After(newestOff) {
				newestOff = m.CreatedAt
			}
		}
		if !newest.IsZero() && time.Since(start) > 2*every {
			worstLocal = max(worstLocal, now.Sub(newest))
		}
		if !newestOff.IsZero() && time.Since(start) > 2*every {
			worstOff = max(worstOff, now.Sub(newestOff))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("schedule every %s: worst recovery point age %s locally, %s at the second site", every, worstLocal, worstOff)
	bs, _ := a.c.ListBackups(ctx, p, "db")
	ids, _ := off.ListIDs(ctx)
	if worstLocal == 0 || worstOff == 0 || len(bs) < 2 || len(ids) < 3 {
		t.Fatalf("the schedule did not keep up: %d backups listed, %d at the second site", len(bs), len(ids))
	}
}
