package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// --- load balancers and scaling groups ---

// ListLBs lists a project's load balancers.
func (c *Client) ListLBs(ctx context.Context, project string) ([]model.LoadBalancer, error) {
	var out api.LBList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/lbs", projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return out.LoadBalancers, nil
}

// CreateLB creates a load balancer.
func (c *Client) CreateLB(ctx context.Context, project string, req api.LBCreateRequest) (*model.LoadBalancer, error) {
	var out model.LoadBalancer
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/lbs", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetLB shows a load balancer.
func (c *Client) GetLB(ctx context.Context, project, name string) (*model.LoadBalancer, error) {
	var out model.LoadBalancer
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/lbs/"+url.PathEscape(name), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchLB changes a load balancer's members, algorithm or health check.
func (c *Client) PatchLB(ctx context.Context, project, name string, req api.LBPatchRequest) (*model.LoadBalancer, error) {
	var out model.LoadBalancer
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/lbs/"+url.PathEscape(name), projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteLB deletes a load balancer (its host stops serving it, then its
// address is released).
func (c *Client) DeleteLB(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/lbs/"+url.PathEscape(name), projectQuery(project), nil, nil)
}

// ListGroups lists a project's scaling groups.
func (c *Client) ListGroups(ctx context.Context, project string) ([]model.ScalingGroup, error) {
	var out api.GroupList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/groups", projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return out.Groups, nil
}

// CreateGroup creates a scaling group.
func (c *Client) CreateGroup(ctx context.Context, project string, req api.GroupCreateRequest) (*model.ScalingGroup, error) {
	var out model.ScalingGroup
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/groups", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetGroup shows a scaling group.
func (c *Client) GetGroup(ctx context.Context, project, name string) (*model.ScalingGroup, error) {
	var out model.ScalingGroup
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/groups/"+url.PathEscape(name), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchGroup changes a scaling group's bounds, target or schedules.
func (c *Client) PatchGroup(ctx context.Context, project, name string, req api.GroupPatchRequest) (*model.ScalingGroup, error) {
	var out model.ScalingGroup
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/groups/"+url.PathEscape(name), projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteGroup deletes a scaling group: its members drain, then go.
func (c *Client) DeleteGroup(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/groups/"+url.PathEscape(name), projectQuery(project), nil, nil)
}
