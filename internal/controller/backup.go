package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/backup/retention"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// The backup controller (docs/backup.md) runs on the leader, as one
// self-contained loop: every pass it
//
//   - requests the scheduled backups that are due (BackupPolicy.Every);
//   - fails backups, restores and tasks whose runner stopped reporting;
//   - prunes completed backups the retention no longer keeps (index in
//     the repository, then the record) and queues garbage collection;
//   - runs repository tasks (verify, gc, sync). A gc waits while any
//     backup of its repository is in flight, and the repository's own
//     lock makes a backup and a GC exclude each other on the data too.
//
// It writes through internal/state only; the repository keys come from
// the server (Keys), which keeps them sealed in the store.

// BackupConfig configures a BackupController.
type BackupConfig struct {
	Repo *state.Repo
	// Keys opens a repository's sealed key; Cluster is this cluster's id.
	Keys    func(*model.BackupRepo) ([]byte, error)
	Cluster string
	// Backend opens a repository's backend (an object store needs its
	// sealed credentials); nil: the directory at Path.
	Backend func(*model.BackupRepo) (repo.Backend, error)
	// Leading reports whether this server leads (nil: always).
	Leading func() bool
	Logger  *slog.Logger
	Clock   func() time.Time
	// Interval between passes (default 10s); StallTimeout: a backup,
	// restore or task not updated for this long is failed (default 10m);
	// GCEvery: how often each repository is collected even without
	// prunes (default 24h).
	Interval     time.Duration
	StallTimeout time.Duration
	GCEvery      time.Duration
}

// BackupController schedules, prunes and runs repository tasks.
type BackupController struct {
	cfg BackupConfig
	log *slog.Logger

	mu      sync.Mutex
	tasks   map[string]bool      // tasks running in this process
	lastGC  map[string]time.Time // repository → last GC queued
	running sync.WaitGroup
}

// NewBackupController returns a controller; nothing runs until Run.
func NewBackupController(cfg BackupConfig) *BackupController {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 10 * time.Minute
	}
	if cfg.GCEvery <= 0 {
		cfg.GCEvery = 24 * time.Hour
	}
	return &BackupController{cfg: cfg, log: cfg.Logger.With("component", "backup-controller"),
		tasks: map[string]bool{}, lastGC: map[string]time.Time{}}
}

// Task returns the controller as a leader task: at the start of each
// term a controller of the term (its own memory of running tasks) that
// reads and writes through the term's store, so every write of a
// deposed leader — a pass it started, a verify, gc or sync still
// running — fails with state.ErrNotLeader instead of landing. The
// Repo and Leading of the config are not used by the task.
func (c *BackupController) Task() LeaderTask {
	return LeaderTask{Name: "backup", Every: c.cfg.Interval, New: func() func(context.Context, store.Store) error {
		var term *BackupController
		return func(ctx context.Context, st store.Store) error {
			if term == nil {
				cfg := c.cfg
				cfg.Repo, cfg.Leading = state.New(st, cfg.Clock), nil
				term = NewBackupController(cfg)
			}
			return term.Pass(ctx)
		}
	}}
}

// Run runs a pass every Interval while leading, until ctx ends. Its
// writes are not fenced on the leadership: servers run the controller
// as a leader task (Task); Run serves tests and single-server tools.
func (c *BackupController) Run(ctx context.Context) error {
	defer c.running.Wait()
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if c.cfg.Leading == nil || c.cfg.Leading() {
			if err := c.Pass(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("backup pass failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Pass runs one pass (exported for tests and for servers that drive
// their controllers by hand).
func (c *BackupController) Pass(ctx context.Context) error {
	repos, err := c.repos(ctx)
	if err != nil {
		return err
	}
	projects, err := c.cfg.Repo.ListProjects(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range projects {
		errs = append(errs, c.project(ctx, p.Name, repos))
	}
	errs = append(errs, c.stalled(ctx), c.runTasks(ctx, repos))
	return errors.Join(errs...)
}

func (c *BackupController) repos(ctx context.Context) (map[string]*model.BackupRepo, error) {
	list, err := c.cfg.Repo.ListBackupRepos(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]*model.BackupRepo{}
	for _, r := range list {
		out[r.Name] = r
	}
	return out, nil
}

func (c *BackupController) open(ctx context.Context, rec *model.BackupRepo, readOnly bool) (*repo.Repo, error) {
	key, err := c.cfg.Keys(rec)
	if err != nil {
		return nil, err
	}
	var be repo.Backend = &repo.Dir{Root: rec.Path}
	if c.cfg.Backend != nil {
		if be, err = c.cfg.Backend(rec); err != nil {
			return nil, err
		}
	}
	return repo.Open(ctx, be, repo.Options{Key: key, Cluster: c.cfg.Cluster,
		ReadOnly: readOnly || rec.ReadOnly, Logger: c.log, Clock: c.cfg.Clock})
}

// project schedules and prunes one project's backups.
func (c *BackupController) project(ctx context.Context, project string, repos map[string]*model.BackupRepo) error {
	pol, err := c.cfg.Repo.EffectivePolicy(ctx, project)
	if err != nil || pol == nil {
		return err
	}
	rec := repos[pol.Repo]
	if rec == nil || rec.ReadOnly {
		return nil
	}
	bs, _, err := c.cfg.Repo.ListBackups(ctx, project)
	if err != nil {
		return err
	}
	every, _ := pol.Interval()
	if every > 0 {
		if err := c.schedule(ctx, project, pol.Repo, every, bs); err != nil {
			return err
		}
	}
	if err := c.prune(ctx, rec, pol.Retention, bs); err != nil {
		return err
	}
	if tgt := repos[pol.SyncTo]; tgt != nil && !tgt.ReadOnly {
		return c.queueSync(ctx, rec.Name, tgt.Name, bs)
	}
	return nil
}

// queueSync stores a sync task from repoName to target when a backup
// completed after the last sync task of that pair was asked for (and
// none is pending or running).
func (c *BackupController) queueSync(ctx context.Context, repoName, target string, bs []*model.Backup) error {
	var newest time.Time
	for _, b := range bs {
		if b.Repo == repoName && b.Phase == model.BackupCompleted && b.FinishedAt != nil && b.FinishedAt.After(newest) {
			newest = *b.FinishedAt
		}
	}
	if newest.IsZero() {
		return nil
	}
	ts, err := c.cfg.Repo.ListBackupTasks(ctx)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.Kind == "sync" && t.Repo == repoName && t.Target == target && (!t.Phase.Final() || !t.CreatedAt.Before(newest)) {
			return nil
		}
	}
	_, err = c.cfg.Repo.CreateBackupTask(ctx, &model.BackupTask{Meta: model.Meta{Name: state.NewOpID("t", c.cfg.Clock())},
		Kind: "sync", Repo: repoName, Target: target})
	return err
}

// schedule requests a backup of every settled VM whose last backup into
// repoName was requested at least every ago (and none is in flight).
func (c *BackupController) schedule(ctx context.Context, project, repoName string, every time.Duration, bs []*model.Backup) error {
	vms, _, err := c.cfg.Repo.ListVMs(ctx, project)
	if err != nil {
		return err
	}
	last := map[string]*model.Backup{}
	busy := map[string]bool{}
	for _, b := range bs {
		if !b.Phase.Final() {
			busy[b.VM] = true
		}
		if b.Repo == repoName && (last[b.VM] == nil || b.CreatedAt.After(last[b.VM].CreatedAt)) {
			last[b.VM] = b
		}
	}
	now := c.cfg.Clock()
	var errs []error
	for _, vm := range vms {
		switch {
		case vm.DeletedAt != nil, vm.Status.Host == "", vm.Status.Migration != "", busy[vm.Name]:
			continue
		case vm.Status.Phase != model.PhaseRunning && vm.Status.Phase != model.PhaseStopped && vm.Status.Phase != model.PhasePaused:
			continue
		case last[vm.Name] != nil && now.Sub(last[vm.Name].CreatedAt) < every:
			continue
		}
		if _, err := c.cfg.Repo.RequestBackup(ctx, vm, repoName, true); err != nil && !errors.Is(err, state.ErrBackupBusy) {
			errs = append(errs, fmt.Errorf("controller: schedule backup of %s: %w", vm.Key(), err))
		}
	}
	return errors.Join(errs...)
}

// prune deletes what the retention does not keep, per VM: the index in
// the repository first (so a record never points at nothing while the
// index lives on unseen), then the record; a GC is queued after.
func (c *BackupController) prune(ctx context.Context, rec *model.BackupRepo, r model.Retention, bs []*model.Backup) error {
	if r == (model.Retention{}) {
		return nil
	}
	byVM := map[string][]retention.Item{}
	recs := map[string]*model.Backup{}
	for _, b := range bs {
		if b.Repo != rec.Name || b.Phase != model.BackupCompleted {
			continue
		}
		at := b.CreatedAt
		if b.StartedAt != nil {
			at = *b.StartedAt
		}
		byVM[b.VM] = append(byVM[b.VM], retention.Item{ID: b.Name, Time: at})
		recs[b.Name] = b
	}
	var victims []string
	for _, items := range byVM {
		victims = append(victims, retention.Select(items, r, nil).Prune...)
	}
	if len(victims) == 0 {
		return nil
	}
	rp, err := c.open(ctx, rec, false)
	if err != nil {
		return err
	}
	for _, id := range victims {
		b := recs[id]
		if err := rp.DeleteBackup(ctx, id); err != nil {
			return fmt.Errorf("controller: prune %s: %w", id, err)
		}
		if err := c.cfg.Repo.DeleteBackup(ctx, b.Project, id); err != nil {
			return err
		}
		c.log.Info("pruned backup", "backup", id, "vm", b.Project+"/"+b.VM)
	}
	return c.queueGC(ctx, rec.Name, true)
}

// queueGC stores a gc task for the repository unless one is pending or
// running; without force only when the last is GCEvery old.
func (c *BackupController) queueGC(ctx context.Context, repoName string, force bool) error {
	c.mu.Lock()
	last := c.lastGC[repoName]
	c.mu.Unlock()
	if !force && c.cfg.Clock().Sub(last) < c.cfg.GCEvery {
		return nil
	}
	ts, err := c.cfg.Repo.ListBackupTasks(ctx)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if t.Kind == "gc" && t.Repo == repoName && !t.Phase.Final() {
			return nil
		}
	}
	c.mu.Lock()
	c.lastGC[repoName] = c.cfg.Clock()
	c.mu.Unlock()
	_, err = c.cfg.Repo.CreateBackupTask(ctx, &model.BackupTask{Meta: model.Meta{Name: state.NewOpID("t", c.cfg.Clock())},
		Kind: "gc", Repo: repoName})
	return err
}

// stalled fails backups and restores whose host stopped reporting.
func (c *BackupController) stalled(ctx context.Context) error {
	now := c.cfg.Clock()
	old := func(t time.Time) bool { return now.Sub(t) > c.cfg.StallTimeout }
	bs, _, err := c.cfg.Repo.ListBackups(ctx, "")
	if err != nil {
		return err
	}
	var errs []error
	for _, b := range bs {
		if b.Phase.Final() || !old(b.UpdatedAt) {
			continue
		}
		_, err := c.cfg.Repo.UpdateBackup(ctx, b.Project, b.Name, func(x *model.Backup) error {
			if x.Phase.Final() || !old(x.UpdatedAt) {
				return state.ErrSkip
			}
			x.Phase, x.FinishedAt = model.BackupFailed, &now
			x.Error = fmt.Sprintf("host %s stopped reporting for %s", x.Host, c.cfg.StallTimeout)
			return nil
		})
		errs = append(errs, err)
	}
	rs, _, err := c.cfg.Repo.ListRestores(ctx, "")
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.Phase.Final() || !old(r.UpdatedAt) {
			continue
		}
		_, err := c.cfg.Repo.UpdateRestore(ctx, r.Project, r.Name, func(x *model.Restore) error {
			if x.Phase.Final() || !old(x.UpdatedAt) {
				return state.ErrSkip
			}
			x.Phase, x.FinishedAt = model.RestoreFailed, &now
			x.Error = fmt.Sprintf("no progress for %s (is the VM placed on a live host?)", c.cfg.StallTimeout)
			return nil
		})
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
