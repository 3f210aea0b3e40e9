package client

import (
	"context"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// backupCalls are the backup routes' entries of the route table test.
func backupCalls() []struct {
	name    string
	pattern string
	query   string
	body    string
	call    func(context.Context, *Client) error
} {
	type tc = struct {
		name    string
		pattern string
		query   string
		body    string
		call    func(context.Context, *Client) error
	}
	drop := func(_ any, err error) error { return err }
	return []tc{
		{"list repos", "GET /api/v1/backup/repos", "", "", func(ctx context.Context, c *Client) error { return drop(c.ListBackupRepos(ctx)) }},
		{"create repo", "POST /api/v1/backup/repos", "", `{"name":"main","path":"/srv/b","key":"k"}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "main", Path: "/srv/b", Key: "k"}))
		}},
		{"get repo", "GET /api/v1/backup/repos/{name}", "", "", func(ctx context.Context, c *Client) error { return drop(c.GetBackupRepo(ctx, "main")) }},
		{"delete repo", "DELETE /api/v1/backup/repos/{name}", "", "", func(ctx context.Context, c *Client) error { return c.DeleteBackupRepo(ctx, "main") }},
		{"catalog", "GET /api/v1/backup/repos/{name}/catalog", "", "", func(ctx context.Context, c *Client) error { return drop(c.RepoCatalog(ctx, "main")) }},
		{"get backup policy", "GET /api/v1/backup/policy", "cluster=true", "", func(ctx context.Context, c *Client) error {
			return drop(c.GetBackupPolicy(ctx, "", true))
		}},
		{"set backup policy", "PUT /api/v1/backup/policy", "project=p1", `{"repo":"main","every":"6h","keepLast":3}`, func(ctx context.Context, c *Client) error {
			return drop(c.SetBackupPolicy(ctx, "p1", false, api.BackupPolicyRequest{BackupPolicy: model.BackupPolicy{Repo: "main", Every: "6h",
				Retention: model.Retention{KeepLast: 3}}}))
		}},
		{"list backups", "GET /api/v1/backups", "project=p1&vm=web1", "", func(ctx context.Context, c *Client) error { return drop(c.ListBackups(ctx, "p1", "web1")) }},
		{"create backup", "POST /api/v1/backups", "project=p1", `{"vm":"web1"}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateBackup(ctx, "p1", api.BackupCreateRequest{VM: "web1"}))
		}},
		{"get backup", "GET /api/v1/backups/{id}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.GetBackup(ctx, "p1", "b1")) }},
		{"delete backup", "DELETE /api/v1/backups/{id}", "project=p1", "", func(ctx context.Context, c *Client) error { return c.DeleteBackup(ctx, "p1", "b1") }},
		{"restore", "POST /api/v1/backups/{id}/restore", "project=p1", `{"as":"web2","bootCheck":true}`, func(ctx context.Context, c *Client) error {
			return drop(c.RestoreBackup(ctx, "p1", "b1", api.RestoreRequest{As: "web2", BootCheck: true}))
		}},
		{"list restores", "GET /api/v1/restores", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.ListRestores(ctx, "p1")) }},
		{"get restore", "GET /api/v1/restores/{id}", "project=p1", "", func(ctx context.Context, c *Client) error { return drop(c.GetRestore(ctx, "p1", "r1")) }},
		{"list tasks", "GET /api/v1/backup/tasks", "", "", func(ctx context.Context, c *Client) error { return drop(c.ListBackupTasks(ctx)) }},
		{"create task", "POST /api/v1/backup/tasks", "", `{"kind":"sync","repo":"main","target":"offsite"}`, func(ctx context.Context, c *Client) error {
			return drop(c.CreateBackupTask(ctx, api.BackupTaskRequest{Kind: "sync", Repo: "main", Target: "offsite"}))
		}},
		{"get task", "GET /api/v1/backup/tasks/{id}", "", "", func(ctx context.Context, c *Client) error { return drop(c.GetBackupTask(ctx, "t1")) }},
		{"failover", "POST /api/v1/dr/failover", "", `{"project":"p1","repo":"offsite","bootCheck":true}`, func(ctx context.Context, c *Client) error {
			return drop(c.Failover(ctx, api.FailoverRequest{Project: "p1", Repo: "offsite", BootCheck: true}))
		}},
	}
}
