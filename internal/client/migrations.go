package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// --- migrations ---

// MigrateVM starts a migration of a VM of project (live when it runs,
// cold when it is stopped). A refusal of the pre-checks is a conflict
// error whose message says why.
func (c *Client) MigrateVM(ctx context.Context, project string, req api.MigrationRequest) (*model.Migration, error) {
	var out model.Migration
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/migrations", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListMigrations lists the migrations of project ("" = the token's
// project); allProjects lists every project's (admins).
func (c *Client) ListMigrations(ctx context.Context, project string, allProjects bool) ([]model.Migration, error) {
	q := projectQuery(project)
	if allProjects {
		q = url.Values{"all-projects": {"true"}}
	}
	var out api.MigrationList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/migrations", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// GetMigration returns one migration with its progress.
func (c *Client) GetMigration(ctx context.Context, id string) (*model.Migration, error) {
	var out model.Migration
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/migrations/"+esc(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CancelMigration asks a migration to stop; a transfer under way is
// aborted and the VM stays where it was.
func (c *Client) CancelMigration(ctx context.Context, id string) (*model.Migration, error) {
	var out model.Migration
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/migrations/"+esc(id)+"/cancel", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// WaitMigration polls a migration until it reaches a final phase or ctx
// ends; each poll's answer goes to progress (when set).
func (c *Client) WaitMigration(ctx context.Context, id string, progress func(*model.Migration)) (*model.Migration, error) {
	delay := c.pollMin
	for {
		m, err := c.GetMigration(ctx, id)
		if err != nil {
			return nil, err
		}
		if progress != nil {
			progress(m)
		}
		if m.Phase.Final() {
			return m, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return m, ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, c.pollMax)
	}
}

// DrainHost puts a host in maintenance and has its VMs moved away, at
// most maxConcurrent at a time (0: the server's default).
func (c *Client) DrainHost(ctx context.Context, name string, maxConcurrent int) (*api.DrainResponse, error) {
	var out api.DrainResponse
	err := c.do(ctx, http.MethodPost, api.Prefix+"/hosts/"+esc(name)+"/drain", nil, api.DrainRequest{MaxConcurrent: maxConcurrent}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// UndrainHost ends a host's maintenance and its drain.
func (c *Client) UndrainHost(ctx context.Context, name string) (*model.Host, error) {
	var out model.Host
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/hosts/"+esc(name)+"/undrain", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
