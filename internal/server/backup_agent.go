package server

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

func (s *Server) backupAgentEndpoints() []agentEndpoint {
	return []agentEndpoint{
		{method: "GET", path: "/agent/v1/backups", handle: s.agentBackups, needCert: true, resp: api.AgentBackups{}, status: 200, query: []string{"after", "wait"}},
		{method: "PUT", path: "/agent/v1/backups/{project}/{name}", handle: s.backupReport, needCert: true, req: api.BackupReport{}, resp: model.Backup{}, status: 200},
		{method: "PUT", path: "/agent/v1/restores/{project}/{name}", handle: s.restoreReport, needCert: true, req: api.RestoreReport{}, resp: model.Restore{}, status: 200},
	}
}

func parseLongPoll(r *http.Request) (after int64, wait time.Duration, err error) {
	q := r.URL.Query()
	if v := q.Get("after"); v != "" {
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n < 0 {
			return 0, 0, fieldError("after", "must be a store revision, got %q", v)
		}
		after = n
	}
	wait = 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, perr := time.ParseDuration(v)
		if perr != nil || d < 0 {
			return 0, 0, fieldError("wait", "must be a duration like 30s, got %q", v)
		}
		wait = min(d, 60*time.Second)
	}
	return after, wait, nil
}

// agentBackups answers the backups and restores the calling host runs,
// with what it needs to open their repositories; with after=REV it
// waits (up to wait) for a backup or restore to change after REV.
func (s *Server) agentBackups(w http.ResponseWriter, r *http.Request, host string) error {
	after, wait, err := parseLongPoll(r)
	if err != nil {
		return err
	}
	if after > 0 && wait > 0 {
		ctx, cancel := s.streamContext(r)
		s.jobs.wait(ctx, after, wait)
		cancel()
	}
	ctx := r.Context()
	jobs, err := s.jobs.read(ctx)
	if err != nil {
		return err
	}
	out := api.AgentBackups{Revision: jobs.answer, Backups: []api.AgentBackupJob{}, Restores: []api.AgentRestoreJob{}}
	access := map[string]*api.RepoAccess{}
	repoOf := func(name string) (*api.RepoAccess, error) {
		if a, ok := access[name]; ok {
			return a, nil
		}
		rec, err := s.repo.GetBackupRepo(ctx, name)
		if err != nil {
			access[name] = nil
			return nil, err
		}
		key, err := s.BackupRepoKey(rec)
		if err != nil {
			return nil, err
		}
		loc, err := s.BackupRepoLocation(rec)
		if err != nil {
			return nil, err
		}
		a := &api.RepoAccess{Name: rec.Name, Path: rec.Path, URL: rec.URL, S3AccessKey: loc.AccessKey, S3SecretKey: loc.SecretKey,
			Key: repo.FormatKey(key), Cluster: s.ClusterID(), ReadOnly: rec.ReadOnly}
		access[name] = a
		return a, nil
	}
	for _, b := range jobs.backups {
		if b.Host != host {
			continue
		}
		a, err := repoOf(b.Repo)
		if a == nil || err != nil {
			continue // the controller fails it (repository forgotten)
		}
		job := api.AgentBackupJob{Backup: *b, Repo: *a}
		// the repository keeps the VM's user data (sealed with the
		// repository's key) so that it restores into another cluster
		if err := s.openForHost(b.Project, &job.Backup.Spec); err != nil {
			s.log.Error("the VM's user data does not open: its backup keeps it sealed with this cluster's key", "backup", b.Name, "host", host, "err", err)
		}
		out.Backups = append(out.Backups, job)
	}
	for _, shared := range jobs.restores {
		rst := *shared // the lists are shared by every poll
		vm, err := s.repo.GetVM(ctx, rst.Project, rst.VM)
		if err != nil || vm.Status.Host != host {
			continue
		}
		a, err := repoOf(rst.Repo)
		if a == nil || err != nil {
			continue
		}
		rst.Host = host
		out.Restores = append(out.Restores, api.AgentRestoreJob{Restore: rst, Repo: *a})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// backupReport records what the backup's host says. A final backup is
// never changed again.
func (s *Server) backupReport(w http.ResponseWriter, r *http.Request, host string) error {
	var rep api.BackupReport
	if he := decodeJSON(w, r, &rep); he != nil {
		return he
	}
	project, name := r.PathValue("project"), r.PathValue("name")
	now := s.now()
	b, err := s.repo.UpdateBackup(r.Context(), project, name, func(b *model.Backup) error {
		switch {
		case b.Host != host:
			return forbidden("backup %s runs on another host", name)
		case b.Phase.Final():
			return conflict("backup %s is %s already", name, b.Phase)
		}
		switch rep.Phase {
		case model.BackupRunning:
			if b.StartedAt == nil {
				b.StartedAt = &now
			}
		case model.BackupCompleted, model.BackupFailed:
			b.FinishedAt = &now
			b.Error = truncateText(rep.Error, 1000)
		default:
			return fieldError("phase", "must be running, completed or failed")
		}
		b.Phase, b.Progress, b.Stats = rep.Phase, rep.Progress, rep.Stats
		if rep.Kind != "" {
			b.Kind, b.Parent, b.Reason = rep.Kind, rep.Parent, truncateText(rep.Reason, 1000)
		}
		switch rep.Consistency {
		case "":
		case model.ConsistencyApplication, model.ConsistencyCrash:
			b.Consistency, b.ConsistencyNote = rep.Consistency, truncateText(rep.ConsistencyNote, 1000)
		default:
			return fieldError("consistency", "must be application or crash")
		}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return notFound("backup %q not found", name)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, withoutUserData(b))
	return nil
}

func truncateText(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// restoreReport records a restore's progress. On "booting" the VM's
// desired power becomes running, so its agent starts it.
func (s *Server) restoreReport(w http.ResponseWriter, r *http.Request, host string) error {
	var rep api.RestoreReport
	if he := decodeJSON(w, r, &rep); he != nil {
		return he
	}
	project, name := r.PathValue("project"), r.PathValue("name")
	ctx := r.Context()
	cur, err := s.repo.GetRestore(ctx, project, name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("restore %q not found", name)
	}
	if err != nil {
		return err
	}
	vm, err := s.repo.GetVM(ctx, project, cur.VM)
	if err != nil || vm.Status.Host != host {
		return forbidden("restore %s targets a VM of another host", name)
	}
	if rep.Phase == model.RestoreBooting && vm.Spec.Power != model.PowerRunning {
		if _, err := s.repo.UpdateVM(ctx, project, cur.VM, func(v *model.VM) error {
			v.Spec.Power = model.PowerRunning
			return nil
		}); err != nil {
			return err
		}
	}
	now := s.now()
	rs, err := s.repo.UpdateRestore(ctx, project, name, func(rs *model.Restore) error {
		if rs.Phase.Final() {
			return conflict("restore %s is %s already", name, rs.Phase)
		}
		switch rep.Phase {
		case model.RestoreRunning, model.RestoreBooting:
		case model.RestoreCompleted, model.RestoreFailed:
			rs.FinishedAt = &now
		default:
			return fieldError("phase", "must be restoring, booting, completed or failed")
		}
		rs.Phase, rs.Progress, rs.Host = rep.Phase, rep.Progress, host
		rs.Error = truncateText(rep.Error, 1000)
		if rep.BytesRestored > 0 {
			rs.BytesRestored, rs.RestoreMs = rep.BytesRestored, rep.RestoreMs
		}
		if rep.BootMs > 0 {
			rs.BootMs = rep.BootMs
		}
		switch rep.BootCheckedBy {
		case "":
		case model.BootCheckAgent, model.BootCheckMarker:
			rs.BootCheckedBy = rep.BootCheckedBy
		default:
			return fieldError("bootCheckedBy", "must be agent or marker")
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rs)
	return nil
}
