package controller

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

type backupFixture struct {
	key  []byte
	t    *testing.T
	ctx  context.Context
	now  time.Time
	st   *state.Repo
	c    *BackupController
	repo *repo.Repo
}

func newBackupFixture(t *testing.T) *backupFixture {
	t.Helper()
	ms := memstore.New()
	t.Cleanup(func() { ms.Close() })
	f := &backupFixture{t: t, ctx: context.Background(), now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	clock := func() time.Time { return f.now }
	f.st = state.New(ms, clock)
	key := repo.GenerateKey()
	f.key = key
	dir := t.TempDir()
	var err error
	if f.repo, err = repo.Create(f.ctx, &repo.Dir{Root: dir}, repo.Options{Key: key, Cluster: "c1", ChunkSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	f.c = NewBackupController(BackupConfig{Repo: f.st, Cluster: "c1", Clock: clock,
		Keys: func(*model.BackupRepo) ([]byte, error) { return key, nil }})
	must(t)(f.st.CreateBackupRepo(f.ctx, &model.BackupRepo{Meta: model.Meta{Name: "main"}, Path: dir}))
	must(t)(f.st.CreateProject(f.ctx, &model.Project{Meta: model.Meta{Name: "p"}}))
	for _, n := range []string{"vm1", "vm2"} {
		must(t)(f.st.CreateVM(f.ctx, &model.VM{Meta: model.Meta{Name: n, Project: "p"}, Spec: model.VMSpec{VCPUs: 1, Memory: model.GiB}}))
		must(t)(f.st.UpdateVM(f.ctx, "p", n, func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = "h1", model.PhaseRunning
			return nil
		}))
	}
	return f
}

// must fails t on an error: must(t)(call()).
func must(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func (f *backupFixture) backups() []*model.Backup {
	f.t.Helper()
	bs, _, err := f.st.ListBackups(f.ctx, "p")
	if err != nil {
		f.t.Fatal(err)
	}
	return bs
}

func (f *backupFixture) pass() {
	f.t.Helper()
	if err := f.c.Pass(f.ctx); err != nil {
		f.t.Fatal(err)
	}
	f.c.running.Wait()
}

// complete finishes every backup in flight as its agent would, writing a
// real index so that pruning has something to delete.
func (f *backupFixture) complete() {
	f.t.Helper()
	for _, b := range f.backups() {
		if b.Phase.Final() {
			continue
		}
		w, err := f.repo.NewWriter(f.ctx, b.Name)
		if err != nil {
			f.t.Fatal(err)
		}
		if err := w.Commit(f.ctx, &repo.Manifest{Project: "p", VM: b.VM, CreatedAt: f.now}); err != nil {
			f.t.Fatal(err)
		}
		must(f.t)(f.st.UpdateBackup(f.ctx, "p", b.Name, func(x *model.Backup) error {
			now := f.now
			x.Phase, x.StartedAt, x.FinishedAt = model.BackupCompleted, &now, &now
			return nil
		}))
	}
}

func TestScheduleRetentionAndGC(t *testing.T) {
	f := newBackupFixture(t)
	if err := f.st.SetBackupPolicy(f.ctx, "_cluster", &model.BackupPolicy{Repo: "main", Every: "1h",
		Retention: model.Retention{KeepLast: 2}}); err != nil {
		t.Fatal(err)
	}
	f.pass()
	if bs := f.backups(); len(bs) != 2 || !bs[0].Scheduled || bs[0].Phase != model.BackupPending {
		t.Fatalf("first pass: %d backups %+v, want one scheduled per VM", len(bs), bs)
	}
	f.pass() // in flight: nothing new
	if n := len(f.backups()); n != 2 {
		t.Fatalf("a pass beside backups in flight made %d", n)
	}
	f.complete()
	f.now = f.now.Add(30 * time.Minute)
	f.pass()
	if n := len(f.backups()); n != 2 {
		t.Fatalf("a pass before the interval made %d backups", n)
	}
	// Three more rounds: retention keeps the last two per VM.
	for i := 0; i < 3; i++ {
		f.now = f.now.Add(61 * time.Minute)
		f.pass()
		f.complete()
	}
	f.pass()
	bs := f.backups()
	if len(bs) != 4 {
		t.Fatalf("%d backups after retention, want 2 per VM", len(bs))
	}
	ids, _ := f.repo.ListIDs(f.ctx)
	if len(ids) != 4 {
		t.Fatalf("%d indexes in the repository after pruning, want 4", len(ids))
	}
	// The prune queued a GC, which ran (no backup was in flight).
	ts, _ := f.st.ListBackupTasks(f.ctx)
	if len(ts) == 0 || ts[len(ts)-1].Kind != "gc" || ts[len(ts)-1].Phase != model.BackupCompleted {
		t.Fatalf("tasks after pruning: %+v", ts)
	}
	// A GC asked for while backups are in flight waits for them.
	f.now = f.now.Add(61 * time.Minute)
	f.pass() // schedules two more
	gc, err := f.st.CreateBackupTask(f.ctx, &model.BackupTask{Meta: model.Meta{Name: "t-gc"}, Kind: "gc", Repo: "main"})
	if err != nil {
		t.Fatal(err)
	}
	f.pass()
	if gc, _ = f.st.GetBackupTask(f.ctx, gc.Name); gc.Phase != model.BackupPending {
		t.Fatalf("gc beside backups in flight: %+v, want pending", gc)
	}
	f.complete()
	f.pass()
	if gc, _ = f.st.GetBackupTask(f.ctx, gc.Name); gc.Phase != model.BackupCompleted {
		t.Fatalf("gc after the backups ended: %+v", gc)
	}
}

func TestStalledBackupFails(t *testing.T) {
	f := newBackupFixture(t)
	vm, _ := f.st.GetVM(f.ctx, "p", "vm1")
	b, err := f.st.RequestBackup(f.ctx, vm, "main", false)
	if err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(11 * time.Minute)
	f.pass()
	got, _ := f.st.GetBackup(f.ctx, "p", b.Name)
	if got.Phase != model.BackupFailed || got.Error == "" {
		t.Fatalf("a backup whose host went silent: %+v", got)
	}
	// The next one is asked for normally (the VM is no longer busy).
	if _, err := f.st.RequestBackup(f.ctx, vm, "main", false); err != nil {
		t.Fatal(err)
	}
}

// TestSyncAfterBackups: a policy's syncTo copies every completed backup
// to the second repository (one sync task per new completion).
func TestSyncAfterBackups(t *testing.T) {
	f := newBackupFixture(t)
	off := t.TempDir()
	offRepo, err := repo.Create(f.ctx, &repo.Dir{Root: off}, repo.Options{Key: f.key, Cluster: "c1", ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	must(t)(f.st.CreateBackupRepo(f.ctx, &model.BackupRepo{Meta: model.Meta{Name: "offsite"}, Path: off}))
	if err := f.st.SetBackupPolicy(f.ctx, "p", &model.BackupPolicy{Repo: "main", Every: "1h", SyncTo: "offsite"}); err != nil {
		t.Fatal(err)
	}
	f.pass()
	f.complete()
	f.pass() // queues the sync and runs it
	f.pass()
	ids, _ := offRepo.ListIDs(f.ctx)
	if len(ids) != 2 {
		t.Fatalf("offsite holds %v after the sync, want both backups", ids)
	}
	ts, _ := f.st.ListBackupTasks(f.ctx)
	syncs := 0
	for _, x := range ts {
		if x.Kind == "sync" {
			syncs++
		}
	}
	f.pass()
	ts2, _ := f.st.ListBackupTasks(f.ctx)
	if syncs != 1 || len(ts2) != len(ts) {
		t.Fatalf("%d sync tasks, then %d tasks after an idle pass (was %d): one per new completion", syncs, len(ts2), len(ts))
	}
}

// TestDeposedBackupTaskWritesNothing runs the backup controller as the
// leader task servers run: once another server has taken the leader key,
// its pass — a backup due, a GC to queue — writes nothing.
func TestDeposedBackupTaskWritesNothing(t *testing.T) {
	f := newBackupFixture(t)
	must(t)(nil, f.st.SetBackupPolicy(f.ctx, "_cluster", &model.BackupPolicy{Repo: "main", Every: "1h"}))
	st := f.st.Store()
	ok, rev, err := st.Txn(f.ctx, []store.Cond{store.IfAbsent(store.LeaderKey)}, []store.Op{store.Put(store.LeaderKey, []byte("a"))})
	if err != nil || !ok {
		t.Fatalf("claim leader key: %v %v", ok, err)
	}
	run := f.c.Task().New()
	term := f.st.Term(store.IfRev(store.LeaderKey, rev)).Store()
	if _, _, err := st.Txn(f.ctx, nil, []store.Op{store.Put(store.LeaderKey, []byte("b"))}); err != nil {
		t.Fatal(err)
	}
	_, before, err := st.List(f.ctx, store.LeaderKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(f.ctx, term); !errors.Is(err, state.ErrNotLeader) {
		t.Errorf("a deposed leader's backup pass: %v, want %v", err, state.ErrNotLeader)
	}
	if _, now, _ := st.List(f.ctx, store.LeaderKey); now != before {
		t.Errorf("a deposed leader's backup pass wrote to the store (revision %d → %d)", before, now)
	}
	if bs := f.backups(); len(bs) != 0 {
		t.Errorf("a deposed leader requested %d backups", len(bs))
	}
	// The leader of the current term does request them.
	cur, err := st.Get(f.ctx, store.LeaderKey)
	if err != nil {
		t.Fatal(err)
	}
	run = f.c.Task().New()
	if err := run(f.ctx, f.st.Term(store.IfRev(store.LeaderKey, cur.ModRev)).Store()); err != nil {
		t.Fatal(err)
	}
	if bs := f.backups(); len(bs) != 2 {
		t.Errorf("the leader's pass requested %d backups, want one per VM", len(bs))
	}
}
