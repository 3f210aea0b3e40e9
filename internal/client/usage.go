package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// UsageQuery selects a usage report (GET /usage).
type UsageQuery struct {
	Project     string
	AllProjects bool
	From, To    time.Time // zero: the server's defaults (this month so far)
	VMs         bool
}

// Usage returns metered usage per project (and VM).
func (c *Client) Usage(ctx context.Context, q UsageQuery) (*api.UsageReport, error) {
	v := url.Values{}
	if q.AllProjects {
		v.Set("all-projects", "true")
	} else if q.Project != "" {
		v.Set("project", q.Project)
	}
	if !q.From.IsZero() {
		v.Set("from", q.From.UTC().Format(time.RFC3339))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.UTC().Format(time.RFC3339))
	}
	if q.VMs {
		v.Set("vms", "true")
	}
	var out api.UsageReport
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/usage", v, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// MeteringSettings returns the grid intensities per site.
func (c *Client) MeteringSettings(ctx context.Context) (*model.MeteringSettings, error) {
	var out model.MeteringSettings
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/cluster/metering", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchMeteringSettings sets (or, negative, removes) sites' intensities.
func (c *Client) PatchMeteringSettings(ctx context.Context, p api.MeteringSettingsPatch) (*model.MeteringSettings, error) {
	var out model.MeteringSettings
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/cluster/metering", nil, p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// History returns the hosts' recent load as the answering server sampled
// it (the dashboard's charts; points 0: all it keeps).
func (c *Client) History(ctx context.Context, points int) (*api.ClusterHistory, error) {
	var q url.Values
	if points > 0 {
		q = url.Values{"points": {strconv.Itoa(points)}}
	}
	var out api.ClusterHistory
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/cluster/history", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
