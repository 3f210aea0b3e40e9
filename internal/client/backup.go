package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// --- repositories ---

// ListBackupRepos lists the registered backup repositories.
func (c *Client) ListBackupRepos(ctx context.Context) ([]api.BackupRepoInfo, error) {
	var out api.BackupRepoList
	err := c.do(ctx, http.MethodGet, api.Prefix+"/backup/repos", nil, nil, &out)
	return out.Items, err
}

// CreateBackupRepo registers (creating or opening) a repository.
func (c *Client) CreateBackupRepo(ctx context.Context, req api.BackupRepoCreateRequest) (*api.BackupRepoInfo, error) {
	var out api.BackupRepoInfo
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/backup/repos", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetBackupRepo shows one repository.
func (c *Client) GetBackupRepo(ctx context.Context, name string) (*api.BackupRepoInfo, error) {
	var out api.BackupRepoInfo
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/backup/repos/"+esc(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RepoCatalog lists the backups a repository holds.
func (c *Client) RepoCatalog(ctx context.Context, name string) (*api.Catalog, error) {
	var out api.Catalog
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/backup/repos/"+esc(name)+"/catalog", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// --- policies ---

func policyQuery(project string, cluster bool) url.Values {
	if cluster {
		return url.Values{"cluster": {"true"}}
	}
	return projectQuery(project)
}

// GetBackupPolicy returns a project's (or the cluster's) backup policy.
func (c *Client) GetBackupPolicy(ctx context.Context, project string, cluster bool) (*model.BackupPolicy, error) {
	var out model.BackupPolicy
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/backup/policy", policyQuery(project, cluster), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetBackupPolicy sets (or with req.Clear removes) a backup policy.
func (c *Client) SetBackupPolicy(ctx context.Context, project string, cluster bool, req api.BackupPolicyRequest) (*model.BackupPolicy, error) {
	var out model.BackupPolicy
	if err := c.do(ctx, http.MethodPut, api.Prefix+"/backup/policy", policyQuery(project, cluster), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// --- backups ---

// ListBackups lists a project's backups (of one VM when vm is set).
func (c *Client) ListBackups(ctx context.Context, project, vm string) ([]model.Backup, error) {
	q := projectQuery(project)
	if vm != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("vm", vm)
	}
	var out api.BackupList
	err := c.do(ctx, http.MethodGet, api.Prefix+"/backups", q, nil, &out)
	return out.Items, err
}

// CreateBackup backs up a VM now.
func (c *Client) CreateBackup(ctx context.Context, project string, req api.BackupCreateRequest) (*model.Backup, error) {
	var out model.Backup
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/backups", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetBackup shows one backup.
func (c *Client) GetBackup(ctx context.Context, project, id string) (*model.Backup, error) {
	var out model.Backup
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/backups/"+esc(id), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteBackup deletes a finished backup.
func (c *Client) DeleteBackup(ctx context.Context, project, id string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/backups/"+esc(id), projectQuery(project), nil, nil)
}

// RestoreBackup starts a restore.
func (c *Client) RestoreBackup(ctx context.Context, project, id string, req api.RestoreRequest) (*model.Restore, error) {
	var out model.Restore
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/backups/"+esc(id)+"/restore", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetRestore shows one restore.
func (c *Client) GetRestore(ctx context.Context, project, id string) (*model.Restore, error) {
	var out model.Restore
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/restores/"+esc(id), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListRestores lists a project's restores.
func (c *Client) ListRestores(ctx context.Context, project string) ([]model.Restore, error) {
	var out api.RestoreList
	err := c.do(ctx, http.MethodGet, api.Prefix+"/restores", projectQuery(project), nil, &out)
	return out.Items, err
}

// --- tasks and failover ---

// CreateBackupTask starts a verify, gc or sync.
func (c *Client) CreateBackupTask(ctx context.Context, req api.BackupTaskRequest) (*model.BackupTask, error) {
	var out model.BackupTask
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/backup/tasks", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetBackupTask shows one task.
func (c *Client) GetBackupTask(ctx context.Context, id string) (*model.BackupTask, error) {
	var out model.BackupTask
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/backup/tasks/"+esc(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Failover restores a project's latest backups from a repository.
func (c *Client) Failover(ctx context.Context, req api.FailoverRequest) (*api.FailoverResponse, error) {
	var out api.FailoverResponse
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/dr/failover", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// poll calls get until done says so, reporting each answer to progress;
// transient failures are polled through.
func poll[T any](ctx context.Context, c *Client, what string, get func() (*T, error), done func(*T) bool, progress func(*T)) (*T, error) {
	interval := c.pollMin
	var last *T
	for {
		v, err := get()
		switch {
		case err == nil:
			last = v
			if progress != nil {
				progress(v)
			}
			if done(v) {
				return v, nil
			}
		case ctx.Err() != nil:
		case transient(err):
		default:
			return last, err
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return last, fmt.Errorf("client: wait for %s: %w", what, ctx.Err())
		case <-t.C:
		}
		interval = min(interval*3/2, c.pollMax)
	}
}

// WaitBackup polls a backup until it ends.
func (c *Client) WaitBackup(ctx context.Context, project, id string, progress func(*model.Backup)) (*model.Backup, error) {
	return poll(ctx, c, "backup "+id, func() (*model.Backup, error) { return c.GetBackup(ctx, project, id) },
		func(b *model.Backup) bool { return b.Phase.Final() }, progress)
}

// WaitRestore polls a restore until it ends.
func (c *Client) WaitRestore(ctx context.Context, project, id string, progress func(*model.Restore)) (*model.Restore, error) {
	return poll(ctx, c, "restore "+id, func() (*model.Restore, error) { return c.GetRestore(ctx, project, id) },
		func(r *model.Restore) bool { return r.Phase.Final() }, progress)
}

// WaitBackupTask polls a task until it ends.
func (c *Client) WaitBackupTask(ctx context.Context, id string, progress func(*model.BackupTask)) (*model.BackupTask, error) {
	return poll(ctx, c, "task "+id, func() (*model.BackupTask, error) { return c.GetBackupTask(ctx, id) },
		func(t *model.BackupTask) bool { return t.Phase.Final() }, progress)
}

// DeleteBackupRepo forgets a repository (its data stays).
func (c *Client) DeleteBackupRepo(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/backup/repos/"+esc(name), nil, nil, nil)
}

// ListBackupTasks lists repository tasks.
func (c *Client) ListBackupTasks(ctx context.Context) ([]model.BackupTask, error) {
	var out api.BackupTaskList
	err := c.do(ctx, http.MethodGet, api.Prefix+"/backup/tasks", nil, nil, &out)
	return out.Items, err
}
