package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

func (s *Server) backupTaskEndpoints() []endpoint {
	return []endpoint{
		{method: "GET", path: "/api/v1/backup/tasks", handle: s.listBackupTasks, resp: api.BackupTaskList{}, status: 200},
		{method: "POST", path: "/api/v1/backup/tasks", handle: s.createBackupTask, req: api.BackupTaskRequest{}, resp: model.BackupTask{}, status: 202},
		{method: "GET", path: "/api/v1/backup/tasks/{id}", handle: s.getBackupTask, resp: model.BackupTask{}, status: 200},
		{method: "POST", path: "/api/v1/dr/failover", handle: s.failover, req: api.FailoverRequest{}, resp: api.FailoverResponse{}, status: 202},
	}
}

// restoreSource is what a restore needs of a backup.
type restoreSource struct {
	id, repo, project, vm string
	spec                  model.VMSpec
}

func checkMarker(m string) error {
	if len(m) > 200 || strings.ContainsAny(m, "\x00\n\r") {
		return fieldError("readyMarker", "must be one line of at most 200 bytes")
	}
	return nil
}

func checkBootCheckBy(by string) error {
	switch by {
	case "", model.BootCheckAuto, model.BootCheckAgent, model.BootCheckMarker:
		return nil
	}
	return fieldError("bootCheckBy", "must be auto (the guest agent's answer or the ready marker, whichever comes first), agent or marker")
}

func (s *Server) restoreBackup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.RestoreRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if (req.As == "") == !req.Force {
		return fieldError("as", "give either as (a new VM's name) or force (overwrite the stopped VM the backup was taken of)")
	}
	if err := checkMarker(req.ReadyMarker); err != nil {
		return err
	}
	if err := checkBootCheckBy(req.BootCheckBy); err != nil {
		return err
	}
	src, err := s.restoreSourceOf(r.Context(), project, r.PathValue("id"), req.Repo, p)
	if err != nil {
		return err
	}
	rs := &model.Restore{Meta: model.Meta{Name: state.NewOpID("r", s.now()), Project: project}, Backup: src.id, Repo: src.repo,
		BootCheck: req.BootCheck, Start: req.Start || req.BootCheck, ReadyMarker: req.ReadyMarker, BootCheckBy: req.BootCheckBy}
	if req.As != "" {
		rs.VM = req.As
		spec := src.spec
		spec.NICs = append([]model.NIC(nil), spec.NICs...)
		for i := range spec.NICs { // a copy beside its original needs its own MACs
			spec.NICs[i].MAC = ""
		}
		if err := s.createRestoreVM(r.Context(), src.project, project, req.As, spec); err != nil {
			return err
		}
	} else {
		rs.VM = src.vm
		if err := s.checkForceTarget(r.Context(), project, src); err != nil {
			return err
		}
	}
	rs, err = s.repo.CreateRestore(r.Context(), rs)
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, rs)
	return nil
}

// restoreSourceOf finds a backup: this cluster's record, or (repoName
// given) an entry of a repository's catalog of this project.
func (s *Server) restoreSourceOf(ctx context.Context, project, id, repoName string, p *principal) (restoreSource, error) {
	if repoName == "" {
		b, err := s.backupRecord(ctx, project, id)
		if err != nil {
			return restoreSource{}, err
		}
		if b.Phase != model.BackupCompleted {
			return restoreSource{}, conflict("backup %q is %s; only a completed backup can be restored", id, b.Phase)
		}
		return restoreSource{id: b.Name, repo: b.Repo, project: b.Project, vm: b.VM, spec: b.Spec}, nil
	}
	if repo.ValidID(id) != nil {
		return restoreSource{}, notFound("backup %s not found", quoteField(id))
	}
	rec, err := s.repoRecord(ctx, repoName, "repo")
	if err != nil {
		return restoreSource{}, err
	}
	rp, err := s.openRepo(ctx, rec, true)
	if err != nil {
		return restoreSource{}, err
	}
	m, err := rp.ReadManifest(ctx, id)
	if err != nil || (m.Project != project && !p.clusterAdmin()) {
		return restoreSource{}, notFound("backup %q not found in repository %q", id, repoName)
	}
	var spec model.VMSpec
	if err := json.Unmarshal(m.Spec, &spec); err != nil {
		return restoreSource{}, conflict("backup %q holds no VM spec to restore from", id)
	}
	return restoreSource{id: m.ID, repo: rec.Name, project: m.Project, vm: m.VM, spec: spec}, nil
}

// createRestoreVM admits the new VM (quota, name) stopped: its host
// creates it, the restore fills its disks, then it is started if asked.
// from is the project the backup was taken in: its user data is sealed
// again for project when it differs, or when it comes in clear from a
// repository (userdata.go).
func (s *Server) createRestoreVM(ctx context.Context, from, project, name string, spec model.VMSpec) error {
	spec.Power = model.PowerStopped
	spec.Placement.Host = ""
	if err := s.resealUserData(from, project, &spec); err != nil {
		return err
	}
	vm, err := buildVM(project, name, spec, "")
	if err != nil {
		var fe *model.FieldError
		if errors.As(err, &fe) && fe.Field == "name" {
			return fieldError("as", "%s", fe.Message)
		}
		return err
	}
	if err := s.checkStorage(ctx, []*model.VMSpec{&vm.Spec}, []string{""}); err != nil {
		return err
	}
	if _, err := s.repo.CreateVM(ctx, vm); err != nil {
		if errors.Is(err, state.ErrExists) {
			return conflict("a VM named %q exists in project %q; choose another name with --as, or --force to overwrite the VM itself", name, project)
		}
		return projectErr(err, project)
	}
	return nil
}

func (s *Server) checkForceTarget(ctx context.Context, project string, src restoreSource) error {
	vm, err := s.repo.GetVM(ctx, project, src.vm)
	if err != nil {
		return vmNotFound(err, project, src.vm)
	}
	switch {
	case vm.Spec.Power != model.PowerStopped || vm.Status.Phase != model.PhaseStopped:
		return conflict("VM %q is %s; stop it first (vpool vm stop %s), or restore --as a new VM", vm.Name, vm.Status.Phase, vm.Name)
	case vm.Status.Host == "" || vm.Status.Migration != "":
		return conflict("VM %q is not settled on a host", vm.Name)
	}
	have := map[string]model.Bytes{}
	for _, d := range vm.Spec.Disks {
		have[d.Name] = d.Size
	}
	for _, d := range src.spec.Disks {
		if size, ok := have[d.Name]; !ok || size < d.Size {
			return conflict("VM %q has no disk %q of at least %s to restore into", vm.Name, d.Name, d.Size)
		}
	}
	rs, _, err := s.repo.ListRestores(ctx, project)
	if err != nil {
		return err
	}
	for _, o := range rs {
		if o.VM == vm.Name && !o.Phase.Final() {
			return conflict("VM %q is being restored (%s)", vm.Name, o.Name)
		}
	}
	return nil
}

func (s *Server) listRestores(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	rs, _, err := s.repo.ListRestores(r.Context(), project)
	if err != nil {
		return err
	}
	out := api.RestoreList{Items: []model.Restore{}}
	for _, x := range rs {
		out.Items = append(out.Items, *x)
	}
	reply(w, http.StatusOK, p, out)
	return nil
}

func (s *Server) getRestore(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if repo.ValidID(id) != nil {
		return notFound("restore %s not found", quoteField(id))
	}
	rs, err := s.repo.GetRestore(r.Context(), project, id)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("restore %q not found in project %q", id, project)
	}
	if err != nil {
		return err
	}
	reply(w, http.StatusOK, p, rs)
	return nil
}

// --- catalog, tasks, failover (cluster admins) ---

func (s *Server) repoCatalog(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := s.requireAdmin(p, "a repository's catalog"); err != nil {
		return err
	}
	rec, err := s.repoRecord(r.Context(), r.PathValue("name"), "name")
	if err != nil {
		return err
	}
	rp, err := s.openRepo(r.Context(), rec, true)
	if err != nil {
		return err
	}
	ms, bad, err := rp.Catalog(r.Context())
	if err != nil {
		return err
	}
	out := api.Catalog{Items: []api.CatalogEntry{}}
	for _, m := range ms {
		out.Items = append(out.Items, api.CatalogEntry{ID: m.ID, Cluster: m.Cluster, Project: m.Project, VM: m.VM, Kind: m.Kind,
			Parent: m.Parent, CreatedAt: m.CreatedAt.Format(time.RFC3339), DiskBytes: m.Stats.DiskBytes, NewBytes: m.Stats.NewBytes})
	}
	for id := range bad {
		out.Unreadable = append(out.Unreadable, id)
	}
	sort.Strings(out.Unreadable)
	reply(w, http.StatusOK, p, out)
	return nil
}

func (s *Server) listBackupTasks(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := s.requireAdmin(p, "repository tasks"); err != nil {
		return err
	}
	ts, err := s.repo.ListBackupTasks(r.Context())
	if err != nil {
		return err
	}
	out := api.BackupTaskList{Items: []model.BackupTask{}}
	for _, t := range ts {
		out.Items = append(out.Items, *t)
	}
	reply(w, http.StatusOK, p, out)
	return nil
}

func (s *Server) getBackupTask(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := s.requireAdmin(p, "repository tasks"); err != nil {
		return err
	}
	id := r.PathValue("id")
	if repo.ValidID(id) != nil {
		return notFound("task %s not found", quoteField(id))
	}
	t, err := s.repo.GetBackupTask(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("task %q not found", id)
	}
	if err != nil {
		return err
	}
	reply(w, http.StatusOK, p, t)
	return nil
}

func (s *Server) createBackupTask(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := s.requireAdmin(p, "repository tasks"); err != nil {
		return err
	}
	var req api.BackupTaskRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if req.Kind != "verify" && req.Kind != "gc" && req.Kind != "sync" {
		return fieldError("kind", "must be verify, gc or sync")
	}
	if len(req.Backups) > 1000 {
		return fieldError("backups", "at most 1000")
	}
	for i, id := range req.Backups {
		if repo.ValidID(id) != nil {
			return fieldError("backups", "entry %d is not a backup id", i)
		}
	}
	rec, err := s.repoRecord(r.Context(), req.Repo, "repo")
	if err != nil {
		return err
	}
	switch {
	case req.Kind == "gc" && rec.ReadOnly:
		return fieldError("repo", "backup repository %q is read-only here; its own cluster collects its garbage", rec.Name)
	case req.Kind == "sync":
		tgt, err := s.repoRecord(r.Context(), req.Target, "target")
		if err != nil {
			return err
		}
		switch {
		case tgt.ReadOnly:
			return fieldError("target", "backup repository %q is read-only here", tgt.Name)
		case tgt.KeyID != rec.KeyID:
			return fieldError("target", "backup repository %q has another key (%s, not %s): create it with the key file of %q", tgt.Name, tgt.KeyID, rec.KeyID, rec.Name)
		case tgt.RepoID == rec.RepoID:
			return fieldError("target", "is the same repository as %q", rec.Name)
		}
	case req.Target != "":
		return fieldError("target", "only a sync has a target")
	}
	t, err := s.repo.CreateBackupTask(r.Context(), &model.BackupTask{Meta: model.Meta{Name: state.NewOpID("t", s.now())},
		Kind: req.Kind, Repo: rec.Name, Target: req.Target, Backups: req.Backups})
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, t)
	return nil
}

// failover restores the latest backup of every VM of a project found in
// a repository, each as a VM of the same name here, started (and boot
// checked when asked). VMs whose name is taken are skipped and named.
func (s *Server) failover(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := s.requireAdmin(p, "a failover"); err != nil {
		return err
	}
	var req api.FailoverRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("project", req.Project); err != nil {
		return err
	}
	if err := checkMarker(req.ReadyMarker); err != nil {
		return err
	}
	if err := checkBootCheckBy(req.BootCheckBy); err != nil {
		return err
	}
	ctx := r.Context()
	rec, err := s.repoRecord(ctx, req.Repo, "repo")
	if err != nil {
		return err
	}
	rp, err := s.openRepo(ctx, rec, true)
	if err != nil {
		return err
	}
	ms, _, err := rp.Catalog(ctx)
	if err != nil {
		return err
	}
	latest := map[string]*repo.Manifest{}
	for _, m := range ms { // oldest first: the last one wins
		if m.Project == req.Project {
			latest[m.VM] = m
		}
	}
	if len(latest) == 0 {
		return fieldError("project", "repository %q holds no backup of project %q", rec.Name, req.Project)
	}
	if _, err := s.repo.GetProject(ctx, req.Project); errors.Is(err, store.ErrNotFound) {
		if _, err := s.repo.CreateProject(ctx, &model.Project{Meta: model.Meta{Name: req.Project}, Description: "failed over from " + rec.Name}); err != nil && !errors.Is(err, state.ErrExists) {
			return err
		}
	}
	out := api.FailoverResponse{ID: state.NewOpID("f", s.now()), Restores: []model.Restore{}, Skipped: map[string]string{}}
	names := make([]string, 0, len(latest))
	for n := range latest {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		m := latest[name]
		var spec model.VMSpec
		if err := json.Unmarshal(m.Spec, &spec); err != nil {
			out.Skipped[name] = "its backup holds no VM spec"
			continue
		}
		if err := s.createRestoreVM(ctx, m.Project, req.Project, name, spec); err != nil {
			out.Skipped[name] = err.Error()
			continue
		}
		rs, err := s.repo.CreateRestore(ctx, &model.Restore{Meta: model.Meta{Name: state.NewOpID("r", s.now()), Project: req.Project},
			Backup: m.ID, Repo: rec.Name, VM: name, BootCheck: req.BootCheck, Start: true, ReadyMarker: req.ReadyMarker, BootCheckBy: req.BootCheckBy, Failover: out.ID})
		if err != nil {
			out.Skipped[name] = err.Error()
			continue
		}
		out.Restores = append(out.Restores, *rs)
	}
	reply(w, http.StatusAccepted, p, out)
	return nil
}
