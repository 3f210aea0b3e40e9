package server

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// Backups (docs/backup.md): repositories, policies, backups and restores.
// The data path is host ↔ repository; the server registers repositories
// (it opens them to check the key), stores the requests and hands the
// hosts their jobs with the repository key over mutual TLS.

func (s *Server) backupEndpoints() []endpoint {
	scoped := []string{"project"}
	return append([]endpoint{
		{method: "GET", path: "/api/v1/backup/repos", handle: s.listBackupRepos, resp: api.BackupRepoList{}, status: 200},
		{method: "POST", path: "/api/v1/backup/repos", handle: s.createBackupRepo, req: api.BackupRepoCreateRequest{}, resp: api.BackupRepoInfo{}, status: 201},
		{method: "GET", path: "/api/v1/backup/repos/{name}", handle: s.getBackupRepo, resp: api.BackupRepoInfo{}, status: 200},
		{method: "DELETE", path: "/api/v1/backup/repos/{name}", handle: s.deleteBackupRepo, status: 204},
		{method: "GET", path: "/api/v1/backup/repos/{name}/catalog", handle: s.repoCatalog, resp: api.Catalog{}, status: 200},
		{method: "GET", path: "/api/v1/backup/policy", handle: s.getBackupPolicy, resp: model.BackupPolicy{}, status: 200, query: []string{"project", "cluster"}},
		{method: "PUT", path: "/api/v1/backup/policy", handle: s.putBackupPolicy, req: api.BackupPolicyRequest{}, resp: model.BackupPolicy{}, status: 200, query: []string{"project", "cluster"}},
		{method: "GET", path: "/api/v1/backups", handle: s.listBackups, resp: api.BackupList{}, status: 200, query: []string{"project", "vm"}},
		{method: "POST", path: "/api/v1/backups", handle: s.createBackup, req: api.BackupCreateRequest{}, resp: model.Backup{}, status: 202, query: scoped},
		{method: "GET", path: "/api/v1/backups/{id}", handle: s.getBackup, resp: model.Backup{}, status: 200, query: scoped},
		{method: "DELETE", path: "/api/v1/backups/{id}", handle: s.deleteBackup, status: 204, query: scoped},
		{method: "POST", path: "/api/v1/backups/{id}/restore", handle: s.restoreBackup, req: api.RestoreRequest{}, resp: model.Restore{}, status: 202, query: scoped},
		{method: "GET", path: "/api/v1/restores", handle: s.listRestores, resp: api.RestoreList{}, status: 200, query: scoped},
		{method: "GET", path: "/api/v1/restores/{id}", handle: s.getRestore, resp: model.Restore{}, status: 200, query: scoped},
	}, s.backupTaskEndpoints()...)
}

// --- repository keys ---

// sealRepoKey seals a repository key with the servers' seal key, bound
// to the repository's name; the key never enters the store in clear.
func (s *Server) sealRepoKey(name string, key []byte) ([]byte, error) {
	return s.sealBound([]byte("vpool backup repo "+name), key)
}

// sealBound seals data with the servers' seal key (AES-256-GCM), bound
// to aad.
func (s *Server) sealBound(aad, data []byte) ([]byte, error) {
	a, err := s.repoKeyAEAD()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, a.NonceSize())
	rand.Read(nonce)
	return a.Seal(nonce, nonce, data, aad), nil
}

// openBound opens what sealBound sealed with the same aad.
func (s *Server) openBound(aad, sealed []byte) ([]byte, error) {
	a, err := s.repoKeyAEAD()
	if err != nil {
		return nil, err
	}
	n := a.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("server: nothing sealed")
	}
	b, err := a.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return nil, errors.New("server: does not open with this server's seal key")
	}
	return b, nil
}

func (s *Server) repoKeyAEAD() (cipher.AEAD, error) {
	sk, err := s.sealKey(false)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(sk)
	if err != nil {
		return nil, fmt.Errorf("server: seal key: %w", err)
	}
	return cipher.NewGCM(blk)
}

// BackupRepoKey opens a repository's sealed key (for the backup
// controller and the hosts' jobs).
func (s *Server) BackupRepoKey(rec *model.BackupRepo) ([]byte, error) {
	if len(rec.SealedKey) == 0 {
		return nil, fmt.Errorf("server: backup repository %s has no key", rec.Name)
	}
	key, err := s.openBound([]byte("vpool backup repo "+rec.Name), rec.SealedKey)
	if err != nil {
		return nil, fmt.Errorf("server: the key of backup repository %s does not open with this server's seal key", rec.Name)
	}
	return key, nil
}

// ClusterID names this cluster in repositories: the cluster CA's hash.
func (s *Server) ClusterID() string { return s.ca.Hash() }

// openRepo opens a registered repository (read-only when it is, or when
// readOnly is asked).
func (s *Server) openRepo(ctx context.Context, rec *model.BackupRepo, readOnly bool) (*repo.Repo, error) {
	key, err := s.BackupRepoKey(rec)
	if err != nil {
		return nil, err
	}
	be, err := s.BackupRepoBackend(rec)
	if err != nil {
		return nil, errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "backup repository %q cannot be opened: %v", rec.Name, err)
	}
	r, err := repo.Open(ctx, be, repo.Options{Key: key, Cluster: s.ClusterID(),
		ReadOnly: readOnly || rec.ReadOnly, Logger: s.log, Clock: s.now})
	if err != nil {
		return nil, errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "backup repository %q cannot be opened: %v", rec.Name, err)
	}
	return r, nil
}

func (s *Server) backupDirs() []string {
	if len(s.cfg.BackupDirs) > 0 {
		return s.cfg.BackupDirs
	}
	if s.cfg.DataDir != "" {
		return []string{filepath.Join(s.cfg.DataDir, "backups")}
	}
	return nil
}

func (s *Server) allowedRepoPath(p string) error {
	if err := model.ValidRepoPath(p); err != nil {
		return err
	}
	for _, d := range s.backupDirs() {
		if rel, err := filepath.Rel(filepath.Clean(d), p); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			return nil
		}
	}
	return fieldError("path", "must be inside one of the server's backup directories %v (vpool server --backup-dir)", s.backupDirs())
}

func repoInfo(rec *model.BackupRepo, admin bool) api.BackupRepoInfo {
	in := api.BackupRepoInfo{Name: rec.Name, ReadOnly: rec.ReadOnly, RepoID: rec.RepoID, Owner: rec.Owner, KeyID: rec.KeyID, ChunkSize: rec.ChunkSize}
	if admin {
		in.Path, in.URL = rec.Path, rec.URL
	}
	return in
}

func (s *Server) requireAdmin(p *principal, what string) error {
	if !p.clusterAdmin() {
		return forbidden("%s needs a cluster admin token", what)
	}
	return nil
}

// --- repositories ---

func (s *Server) listBackupRepos(w http.ResponseWriter, r *http.Request, p *principal) error {
	recs, err := s.repo.ListBackupRepos(r.Context())
	if err != nil {
		return err
	}
	out := api.BackupRepoList{Items: []api.BackupRepoInfo{}}
	for _, rec := range recs {
		out.Items = append(out.Items, repoInfo(rec, p.clusterAdmin()))
	}
	reply(w, http.StatusOK, p, out)
	return nil
}

func (s *Server) repoRecord(ctx context.Context, name, field string) (*model.BackupRepo, error) {
	if model.ValidName(field, name) != nil {
		return nil, notFound("backup repository %s not found", quoteField(name))
	}
	rec, err := s.repo.GetBackupRepo(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		if field != "name" {
			return nil, fieldError(field, "no backup repository %q is registered (vpool backup repo list)", name)
		}
		return nil, notFound("backup repository %q not found", name)
	}
	return rec, err
}

func (s *Server) getBackupRepo(w http.ResponseWriter, r *http.Request, p *principal) error {
	rec, err := s.repoRecord(r.Context(), r.PathValue("name"), "name")
	if err != nil {
		return err
	}
	reply(w, http.StatusOK, p, repoInfo(rec, p.clusterAdmin()))
	return nil
}

func (s *Server) deleteBackupRepo(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := s.requireAdmin(p, "forgetting a backup repository"); err != nil {
		return err
	}
	rec, err := s.repoRecord(r.Context(), r.PathValue("name"), "name")
	if err != nil {
		return err
	}
	if err := s.repo.DeleteBackupRepo(r.Context(), rec.Name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// createBackupRepo registers a repository: it creates one in an empty
// (or absent) directory, or opens the one there with the key given. A
// repository of another cluster is registered read-only.
func (s *Server) createBackupRepo(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := s.requireAdmin(p, "registering a backup repository"); err != nil {
		return err
	}
	var req api.BackupRepoCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("name", req.Name); err != nil {
		return err
	}
	key, err := repo.ParseKey([]byte(req.Key))
	if err != nil {
		return fieldError("key", "%v", err)
	}
	if _, err := s.repo.GetBackupRepo(r.Context(), req.Name); err == nil {
		return conflict("backup repository %q is already registered", req.Name)
	}
	ctx := r.Context()
	be, field, err := s.newRepoBackend(ctx, req)
	if err != nil {
		return err
	}
	created := false
	cfg, err := repo.ReadConfig(ctx, be)
	switch {
	case errors.Is(err, repo.ErrNotRepo):
		if err := prepareNewRepo(ctx, be, field); err != nil {
			return err
		}
		rp, err := repo.Create(ctx, be, repo.Options{Key: key, Cluster: s.ClusterID()})
		if err != nil {
			return fieldError(field, "cannot create a repository there: %v", err)
		}
		cfg, created = rp.Config(), true
	case err != nil:
		return fieldError(field, "cannot read the repository there: %v", err)
	default:
		if _, err := repo.Open(ctx, be, repo.Options{Key: key, Cluster: s.ClusterID(), ReadOnly: true}); err != nil {
			if errors.Is(err, repo.ErrWrongKey) {
				return fieldError("key", "does not open the repository at %s (key %s is needed; is this its key file?)", quoteField(be.String()), cfg.KeyID)
			}
			return fieldError(field, "%v", err)
		}
	}
	sealed, err := s.sealRepoKey(req.Name, key)
	if err != nil {
		return err
	}
	rec := &model.BackupRepo{Meta: model.Meta{Name: req.Name}, Path: req.Path, URL: req.URL, RepoID: cfg.ID, Owner: cfg.Cluster,
		KeyID: cfg.KeyID, ChunkSize: cfg.ChunkSize, SealedKey: sealed, ReadOnly: req.ReadOnly || cfg.Cluster != s.ClusterID()}
	if req.URL != "" {
		if rec.SealedCredentials, err = s.sealRepoCredentials(req.Name, req.S3AccessKey, req.S3SecretKey); err != nil {
			return err
		}
	}
	rec, err = s.repo.CreateBackupRepo(ctx, rec)
	if errors.Is(err, state.ErrExists) {
		return conflict("backup repository %q is already registered", req.Name)
	}
	if err != nil {
		return err
	}
	info := repoInfo(rec, true)
	info.Created = created
	reply(w, http.StatusCreated, p, info)
	return nil
}

// --- policies ---

func (s *Server) policyScope(r *http.Request, p *principal, write bool) (string, error) {
	if r.URL.Query().Get("cluster") == "true" {
		if err := s.requireAdmin(p, "the cluster's backup policy"); err != nil {
			return "", err
		}
		return store.ClusterPolicyName, nil
	}
	return s.scope(r, p, write)
}

func (s *Server) getBackupPolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	name, err := s.policyScope(r, p, false)
	if err != nil {
		return err
	}
	pol, err := s.repo.GetBackupPolicy(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("no backup policy is set for %s", name)
	}
	if err != nil {
		return err
	}
	reply(w, http.StatusOK, p, pol)
	return nil
}

func (s *Server) putBackupPolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	name, err := s.policyScope(r, p, true)
	if err != nil {
		return err
	}
	var req api.BackupPolicyRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if req.Clear {
		if err := s.repo.SetBackupPolicy(r.Context(), name, nil); err != nil {
			return err
		}
		reply(w, http.StatusOK, p, model.BackupPolicy{})
		return nil
	}
	if err := req.BackupPolicy.Validate(); err != nil {
		return err
	}
	rec, err := s.repoRecord(r.Context(), req.Repo, "repo")
	if err != nil {
		return err
	}
	if rec.ReadOnly {
		return fieldError("repo", "backup repository %q is read-only here (another cluster's); choose one this cluster writes", rec.Name)
	}
	if req.SyncTo != "" {
		tgt, err := s.repoRecord(r.Context(), req.SyncTo, "syncTo")
		if err != nil {
			return err
		}
		if tgt.ReadOnly || tgt.KeyID != rec.KeyID {
			return fieldError("syncTo", "backup repository %q must be writable here and share the key of %q", tgt.Name, rec.Name)
		}
	}
	if err := s.repo.SetBackupPolicy(r.Context(), name, &req.BackupPolicy); err != nil {
		return err
	}
	reply(w, http.StatusOK, p, req.BackupPolicy)
	return nil
}

// --- backups ---

func (s *Server) listBackups(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	bs, _, err := s.repo.ListBackups(r.Context(), project)
	if err != nil {
		return err
	}
	vm := r.URL.Query().Get("vm")
	out := api.BackupList{Items: []model.Backup{}}
	for _, b := range bs {
		if vm == "" || b.VM == vm {
			out.Items = append(out.Items, *b)
		}
	}
	reply(w, http.StatusOK, p, out)
	return nil
}

func (s *Server) backupRecord(ctx context.Context, project, id string) (*model.Backup, error) {
	if repo.ValidID(id) != nil {
		return nil, notFound("backup %s not found", quoteField(id))
	}
	b, err := s.repo.GetBackup(ctx, project, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("backup %q not found in project %q", id, project)
	}
	return b, err
}

func (s *Server) getBackup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	b, err := s.backupRecord(r.Context(), project, r.PathValue("id"))
	if err != nil {
		return err
	}
	reply(w, http.StatusOK, p, b)
	return nil
}

func (s *Server) createBackup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.BackupCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("vm", req.VM); err != nil {
		return err
	}
	if req.Limits != nil {
		if err := req.Limits.Validate("limits."); err != nil {
			return err
		}
	}
	pol, err := s.repo.EffectivePolicy(r.Context(), project)
	if err != nil {
		return err
	}
	if req.Repo == "" {
		if pol == nil {
			return fieldError("repo", "name a repository: project %q has no backup policy to take it from", project)
		}
		req.Repo = pol.Repo
	}
	var limits model.BackupLimits
	switch {
	case req.Limits != nil:
		limits = *req.Limits
	case pol != nil:
		limits = pol.Limits
	}
	rec, err := s.repoRecord(r.Context(), req.Repo, "repo")
	if err != nil {
		return err
	}
	if rec.ReadOnly {
		return fieldError("repo", "backup repository %q belongs to cluster %s and is read-only here; back up into one of this cluster's", rec.Name, rec.Owner)
	}
	vm, err := s.assignedVM(r.Context(), project, req.VM, "a backup")
	if err != nil {
		return err
	}
	b, err := s.repo.RequestBackup(r.Context(), vm, rec.Name, false, limits)
	if errors.Is(err, state.ErrBackupBusy) {
		return conflict("VM %q already has a backup in flight: %v", req.VM, err)
	}
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, b)
	return nil
}

// deleteBackup removes a finished backup: its index in the repository
// (its chunks go at the next GC), then its record.
func (s *Server) deleteBackup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	b, err := s.backupRecord(r.Context(), project, r.PathValue("id"))
	if err != nil {
		return err
	}
	if !b.Phase.Final() {
		return conflict("backup %q is %s; wait until it ends", b.Name, b.Phase)
	}
	if b.Phase == model.BackupCompleted {
		rec, err := s.repo.GetBackupRepo(r.Context(), b.Repo)
		if err == nil && !rec.ReadOnly {
			rp, err := s.openRepo(r.Context(), rec, false)
			if err != nil {
				return err
			}
			if err := rp.DeleteBackup(r.Context(), b.Name); err != nil {
				return err
			}
		}
	}
	if err := s.repo.DeleteBackup(r.Context(), project, b.Name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// forTenantBackup withholds the host a backup or restore ran on and
// redacts what its agent reported (errors and fallback reasons may name
// host paths or QEMU's words).
func forTenantBackup(v any) any {
	backup := func(b model.Backup) model.Backup {
		b.Host, b.Error, b.Reason = "", redact(b.Error), redact(b.Reason)
		return b
	}
	restore := func(r model.Restore) model.Restore {
		r.Host, r.Error = "", redact(r.Error)
		return r
	}
	switch t := v.(type) {
	case *model.Backup:
		c := backup(*t)
		return &c
	case api.BackupList:
		out := t
		out.Items = make([]model.Backup, len(t.Items))
		for i, b := range t.Items {
			out.Items[i] = backup(b)
		}
		return out
	case *model.Restore:
		c := restore(*t)
		return &c
	case api.RestoreList:
		out := t
		out.Items = make([]model.Restore, len(t.Items))
		for i, r := range t.Items {
			out.Items[i] = restore(r)
		}
		return out
	}
	return v
}
