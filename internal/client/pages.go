package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// Paged lists: the server answers a page of up to limit items and a
// continue token for the next (api.VMList.Continue). A paged listing is
// not a snapshot at one revision: each item is as its page found it, and
// no item comes twice.

// VMPages calls fn with each page of VMs (up to limit each; 0:
// api.DefaultPageLimit), in key order (project, then name), until the
// last page or fn's error.
func (c *Client) VMPages(ctx context.Context, opt ListVMsOptions, limit int, fn func(page []model.VM) error) error {
	q := url.Values{}
	if opt.Project != "" {
		q.Set("project", opt.Project)
	}
	if opt.AllProjects {
		q.Set("all-projects", "true")
	}
	return pages(ctx, q, limit, func(q url.Values) (string, error) {
		var page api.VMList
		if err := c.do(ctx, http.MethodGet, api.Prefix+"/vms", q, nil, &page); err != nil {
			return "", err
		}
		return page.Continue, fn(page.Items)
	})
}

// HostPages calls fn with each page of hosts (up to limit each; 0:
// api.DefaultPageLimit), by name, until the last page or fn's error.
func (c *Client) HostPages(ctx context.Context, limit int, fn func(page []model.Host) error) error {
	return pages(ctx, url.Values{}, limit, func(q url.Values) (string, error) {
		var page api.HostList
		if err := c.do(ctx, http.MethodGet, api.Prefix+"/hosts", q, nil, &page); err != nil {
			return "", err
		}
		return page.Continue, fn(page.Items)
	})
}

// pages asks for one page after another: get sends the query (limit and
// continue set) and returns the next continue token ("" at the end).
func pages(ctx context.Context, q url.Values, limit int, get func(url.Values) (string, error)) error {
	if limit <= 0 {
		limit = api.DefaultPageLimit
	}
	q.Set("limit", strconv.Itoa(min(limit, api.MaxPageLimit)))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		next, err := get(q)
		if err != nil || next == "" {
			return err
		}
		q.Set("continue", next)
	}
}
