package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/vpool/vpool/internal/api"
)

// Compliance returns the data-locality compliance report (project "" and
// all: every project, for admins; breaches: only VMs with a breach).
func (c *Client) Compliance(ctx context.Context, project string, all, breaches bool) (*api.ComplianceReport, error) {
	q := url.Values{}
	if all {
		q.Set("all-projects", "true")
	} else if project != "" {
		q.Set("project", project)
	}
	if breaches {
		q.Set("breaches", "true")
	}
	var out api.ComplianceReport
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/compliance", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
