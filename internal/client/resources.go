package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// --- cluster ---

// OpenAPI returns the server's OpenAPI 3 document as raw JSON.
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	var raw []byte
	err := c.do(ctx, http.MethodGet, api.Prefix+"/openapi.json", nil, nil, &raw)
	return raw, err
}

// ClusterInfo returns the cluster summary.
func (c *Client) ClusterInfo(ctx context.Context) (*api.ClusterInfo, error) {
	var out api.ClusterInfo
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/cluster", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Policy returns the cluster placement policy.
func (c *Client) Policy(ctx context.Context) (*model.Policy, error) {
	var out model.Policy
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/cluster/policy", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetPolicy replaces the cluster placement policy and returns the stored one.
func (c *Client) SetPolicy(ctx context.Context, p model.Policy) (*model.Policy, error) {
	out := p
	if err := c.do(ctx, http.MethodPut, api.Prefix+"/cluster/policy", nil, p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// --- projects ---

// ListProjects lists the projects the token may see, with their usage.
func (c *Client) ListProjects(ctx context.Context) ([]api.ProjectView, error) {
	var out api.ProjectList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/projects", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// CreateProject creates a project.
func (c *Client) CreateProject(ctx context.Context, req api.ProjectCreateRequest) (*api.ProjectView, error) {
	var out api.ProjectView
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/projects", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetProject returns a project with its usage.
func (c *Client) GetProject(ctx context.Context, name string) (*api.ProjectView, error) {
	var out api.ProjectView
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/projects/"+esc(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchProject changes a project's description or quota.
func (c *Client) PatchProject(ctx context.Context, name string, req api.ProjectPatchRequest) (*api.ProjectView, error) {
	var out api.ProjectView
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/projects/"+esc(name), nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteProject deletes an empty project.
func (c *Client) DeleteProject(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/projects/"+esc(name), nil, nil, nil)
}

// --- VMs ---

// ListVMsOptions selects the VMs of ListVMs.
type ListVMsOptions struct {
	Project     string // empty: the token's project, else "default"
	AllProjects bool   // admins only
}

// ListVMs lists VMs.
func (c *Client) ListVMs(ctx context.Context, opt ListVMsOptions) (*api.VMList, error) {
	q := url.Values{}
	if opt.Project != "" {
		q.Set("project", opt.Project)
	}
	if opt.AllProjects {
		q.Set("all-projects", "true")
	}
	var out api.VMList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/vms", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateVM creates one VM (req.DryRun is ignored: see DryRunVM) and returns
// it as stored, normally in phase pending.
func (c *Client) CreateVM(ctx context.Context, project string, req api.VMCreateRequest) (*model.VM, error) {
	req.DryRun = false
	var out model.VM
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/vms", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DryRunVM asks where the VM would be placed; nothing changes.
func (c *Client) DryRunVM(ctx context.Context, project string, req api.VMCreateRequest) (*api.DryRunResponse, error) {
	req.DryRun = true
	var out api.DryRunResponse
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/vms", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateVMs creates several VMs, all or nothing (req.DryRun is ignored:
// see DryRunVMs).
func (c *Client) CreateVMs(ctx context.Context, project string, req api.VMBatchRequest) (*api.VMBatchResponse, error) {
	req.DryRun = false
	var out api.VMBatchResponse
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/vms:batch", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DryRunVMs asks where each VM of a batch would be placed; nothing
// changes. The answer has one entry per VM, in the batch's order.
func (c *Client) DryRunVMs(ctx context.Context, project string, req api.VMBatchRequest) ([]api.DryRunResponse, error) {
	req.DryRun = true
	var out []api.DryRunResponse
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/vms:batch", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// GetVM returns one VM.
func (c *Client) GetVM(ctx context.Context, project, name string) (*model.VM, error) {
	var out model.VM
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/vms/"+esc(name), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchVM resizes or relabels a VM.
func (c *Client) PatchVM(ctx context.Context, project, name string, req api.VMPatchRequest) (*model.VM, error) {
	var out model.VM
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/vms/"+esc(name), projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteVM asks for a VM's deletion; the VM disappears once its host has
// removed it (see WaitVM with Gone).
func (c *Client) DeleteVM(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/vms/"+esc(name), projectQuery(project), nil, nil)
}

// StartVM sets a VM's desired power state to running.
func (c *Client) StartVM(ctx context.Context, project, name string) (*model.VM, error) {
	return c.vmAction(ctx, project, name, "start")
}

// StopVM sets a VM's desired power state to stopped.
func (c *Client) StopVM(ctx context.Context, project, name string) (*model.VM, error) {
	return c.vmAction(ctx, project, name, "stop")
}

// RestartVM asks for a restart: the returned VM carries the new
// Spec.RestartNonce, which Status.AppliedRestartNonce reaches once done.
func (c *Client) RestartVM(ctx context.Context, project, name string) (*model.VM, error) {
	return c.vmAction(ctx, project, name, "restart")
}

// vmAction posts to /vms/{name}/{action}. A server that answers without a
// body yields a nil VM and no error.
func (c *Client) vmAction(ctx context.Context, project, name, action string) (*model.VM, error) {
	var out *model.VM
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/vms/"+esc(name)+"/"+action, projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// --- hosts ---

// ListHosts lists hosts.
func (c *Client) ListHosts(ctx context.Context) ([]model.Host, error) {
	var out api.HostList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/hosts", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// GetHost returns one host.
func (c *Client) GetHost(ctx context.Context, name string) (*model.Host, error) {
	var out model.Host
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/hosts/"+esc(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchHost labels, cordons or sets the ratios or state of a host.
func (c *Client) PatchHost(ctx context.Context, name string, req api.HostPatchRequest) (*model.Host, error) {
	var out model.Host
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/hosts/"+esc(name), nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteHost forgets a host that has no VMs.
func (c *Client) DeleteHost(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/hosts/"+esc(name), nil, nil, nil)
}

// CreateJoinToken issues a token with which a new host's agent joins.
func (c *Client) CreateJoinToken(ctx context.Context, req api.JoinTokenRequest) (*api.JoinTokenResponse, error) {
	var out api.JoinTokenResponse
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/hosts/join-tokens", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RekeyHost revokes a host's certificate and issues a join token that
// joins that host alone, once.
func (c *Client) RekeyHost(ctx context.Context, name string, req api.HostRekeyRequest) (*api.JoinTokenResponse, error) {
	var out api.JoinTokenResponse
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/hosts/"+esc(name)+"/rekey", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// --- tokens ---

// ListTokens lists bearer tokens (never their secrets). project narrows
// the list when not empty.
func (c *Client) ListTokens(ctx context.Context, project string) ([]model.Token, error) {
	var out api.TokenList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/tokens", projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// CreateToken creates a bearer token; the secret is in the answer only.
func (c *Client) CreateToken(ctx context.Context, req api.TokenCreateRequest) (*api.TokenCreateResponse, error) {
	var out api.TokenCreateResponse
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/tokens", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeToken deletes a token.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/tokens/"+esc(id), nil, nil, nil)
}

// --- events ---

func eventsQuery(since int64, project string) url.Values {
	q := url.Values{}
	if since > 0 {
		q.Set("since", strconv.FormatInt(since, 10))
	}
	switch project {
	case "":
	case AllProjects:
		q.Set("all-projects", "true")
	default:
		q.Set("project", project)
	}
	return q
}

// AllProjects, given as the project of ListEvents or FollowEvents, asks
// for the events of every project (admins; other tokens are refused, as
// with ListVMs' AllProjects). Project names are DNS labels, so it names
// none.
const AllProjects = "*"

// ListEvents lists stored events whose ID is above since (0: all kept),
// of one project when project is not empty.
func (c *Client) ListEvents(ctx context.Context, since int64, project string) ([]model.Event, error) {
	var out api.EventList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/events", eventsQuery(since, project), nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// HAStatus returns host HA at a glance (admin).
func (c *Client) HAStatus(ctx context.Context) (*api.HAStatus, error) {
	var out api.HAStatus
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/ha", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
