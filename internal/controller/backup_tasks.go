package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// runTasks starts the pending repository tasks (a gc only while no
// backup of its repository is in flight), fails running ones whose
// runner went away, and queues the periodic GC of every writable
// repository.
func (c *BackupController) runTasks(ctx context.Context, repos map[string]*model.BackupRepo) error {
	var errs []error
	for name, rec := range repos {
		if !rec.ReadOnly {
			errs = append(errs, c.queueGC(ctx, name, false))
		}
	}
	ts, err := c.cfg.Repo.ListBackupTasks(ctx)
	if err != nil {
		return err
	}
	bs, _, err := c.cfg.Repo.ListBackups(ctx, "")
	if err != nil {
		return err
	}
	inFlight := map[string]bool{}
	for _, b := range bs {
		if !b.Phase.Final() {
			inFlight[b.Repo] = true
		}
	}
	now := c.cfg.Clock()
	for _, t := range ts {
		c.mu.Lock()
		mine := c.tasks[t.Name]
		c.mu.Unlock()
		switch {
		case mine || t.Phase.Final():
		case t.Phase == model.BackupRunning && now.Sub(t.UpdatedAt) > c.cfg.StallTimeout:
			_, err := c.cfg.Repo.UpdateBackupTask(ctx, t.Name, func(x *model.BackupTask) error {
				x.Phase, x.FinishedAt, x.Error = model.BackupFailed, &now, "its runner (the previous leader) went away"
				return nil
			})
			errs = append(errs, err)
		case t.Phase == model.BackupPending && t.Kind == "gc" && inFlight[t.Repo]:
			// waits: GC never runs beside a backup of its repository
		case t.Phase == model.BackupPending:
			rec, tgt := repos[t.Repo], repos[t.Target]
			if rec == nil || (t.Kind == "sync" && tgt == nil) {
				errs = append(errs, c.finishTask(ctx, t.Name, nil, nil, errors.New("its repository is no longer registered")))
				continue
			}
			c.startTask(ctx, t, rec, tgt)
		}
	}
	return errors.Join(errs...)
}

func (c *BackupController) startTask(ctx context.Context, t *model.BackupTask, rec, tgt *model.BackupRepo) {
	_, err := c.cfg.Repo.UpdateBackupTask(ctx, t.Name, func(x *model.BackupTask) error {
		if x.Phase != model.BackupPending {
			return state.ErrSkip
		}
		x.Phase = model.BackupRunning
		return nil
	})
	if err != nil {
		c.log.Warn("starting a repository task failed", "task", t.Name, "err", err)
		return
	}
	c.mu.Lock()
	c.tasks[t.Name] = true
	c.mu.Unlock()
	c.running.Go(func() {
		defer func() {
			c.mu.Lock()
			delete(c.tasks, t.Name)
			c.mu.Unlock()
		}()
		result, problems, err := c.task(ctx, t, rec, tgt)
		if errors.Is(err, repo.ErrBusy) && t.Kind == "gc" {
			c.cfg.Repo.UpdateBackupTask(context.WithoutCancel(ctx), t.Name, func(x *model.BackupTask) error {
				x.Phase, x.Error = model.BackupPending, "waiting: "+err.Error()
				return nil
			})
			return
		}
		if err := c.finishTask(context.WithoutCancel(ctx), t.Name, result, problems, err); err != nil {
			c.log.Warn("recording a repository task failed", "task", t.Name, "err", err)
		}
	})
}

// task runs one task and returns its report as a JSON object.
func (c *BackupController) task(ctx context.Context, t *model.BackupTask, rec, tgt *model.BackupRepo) (map[string]any, []string, error) {
	last := time.Time{}
	progress := func(done, total int64) {
		if time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		c.cfg.Repo.UpdateBackupTask(ctx, t.Name, func(x *model.BackupTask) error {
			x.Progress = model.Progress{Done: done, Total: total}
			return nil
		})
	}
	start := time.Now()
	var report any
	var problems []string
	switch t.Kind {
	case "verify":
		rp, err := c.open(ctx, rec, true)
		if err != nil {
			return nil, nil, err
		}
		v, err := rp.Verify(ctx, t.Backups, progress)
		if err != nil {
			return nil, nil, err
		}
		for _, p := range v.Problems {
			what := "chunk " + p.Chunk
			if p.Index != "" {
				what = "index " + p.Index
			}
			problems = append(problems, fmt.Sprintf("%s: %s (used by %s)", what, p.Error, strings.Join(p.Backups, ", ")))
		}
		report = v
		if !v.OK() {
			res := toMap(report, start)
			return res, problems, fmt.Errorf("verify found %d problems", len(problems))
		}
	case "gc":
		rp, err := c.open(ctx, rec, false)
		if err != nil {
			return nil, nil, err
		}
		if report, err = rp.GC(ctx, progress); err != nil {
			return nil, nil, err
		}
	case "sync":
		src, err := c.open(ctx, rec, true)
		if err != nil {
			return nil, nil, err
		}
		dst, err := c.open(ctx, tgt, false)
		if err != nil {
			return nil, nil, err
		}
		if report, err = repo.Sync(ctx, src, dst, t.Backups, progress); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("unknown task kind %q", t.Kind)
	}
	return toMap(report, start), problems, nil
}

// toMap renders a report as a JSON object with its wall time.
func toMap(v any, start time.Time) map[string]any {
	b, _ := json.Marshal(v)
	out := map[string]any{}
	json.Unmarshal(b, &out)
	out["wallMs"] = time.Since(start).Milliseconds()
	return out
}

func (c *BackupController) finishTask(ctx context.Context, name string, result map[string]any, problems []string, err error) error {
	now := c.cfg.Clock()
	_, uerr := c.cfg.Repo.UpdateBackupTask(ctx, name, func(x *model.BackupTask) error {
		x.Phase, x.FinishedAt, x.Result, x.Problems = model.BackupCompleted, &now, result, problems
		if err != nil {
			x.Phase, x.Error = model.BackupFailed, err.Error()
		}
		return nil
	})
	return uerr
}
