package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// --- networks and their address pools ---

// ListNetworks lists a project's networks.
func (c *Client) ListNetworks(ctx context.Context, project string) ([]model.Network, error) {
	var out api.NetworkList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/networks", projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return out.Networks, nil
}

// CreateNetwork creates a network.
func (c *Client) CreateNetwork(ctx context.Context, project string, req api.NetworkCreateRequest) (*model.Network, error) {
	var out model.Network
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/networks", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetNetwork shows a network.
func (c *Client) GetNetwork(ctx context.Context, project, name string) (*model.Network, error) {
	var out model.Network
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/networks/"+url.PathEscape(name), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteNetwork deletes a network no address of which is in use.
func (c *Client) DeleteNetwork(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/networks/"+url.PathEscape(name), projectQuery(project), nil, nil)
}

// ListAddresses lists a network's allocated addresses.
func (c *Client) ListAddresses(ctx context.Context, project, network string) ([]model.AddressAlloc, error) {
	var out api.AddressList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/networks/"+url.PathEscape(network)+"/addresses", projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return out.Addresses, nil
}

// AllocateAddress takes an address of a network for owner ("kind/name",
// e.g. a balancer's virtual IP "lb/web"); ip is optional.
func (c *Client) AllocateAddress(ctx context.Context, project, network string, req api.AddressRequest) (*model.AddressAlloc, error) {
	var out model.AddressAlloc
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/networks/"+url.PathEscape(network)+"/addresses", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReleaseAddress frees an address taken with AllocateAddress (owner ""
// releases whatever non-NIC owner holds it).
func (c *Client) ReleaseAddress(ctx context.Context, project, network, ip, owner string) error {
	q := projectQuery(project)
	if owner != "" {
		if q == nil {
			q = url.Values{}
		}
		q.Set("owner", owner)
	}
	return c.do(ctx, http.MethodDelete, api.Prefix+"/networks/"+url.PathEscape(network)+"/addresses/"+url.PathEscape(ip), q, nil, nil)
}

// --- security groups ---

// ListSecurityGroups lists a project's security groups.
func (c *Client) ListSecurityGroups(ctx context.Context, project string) ([]model.SecurityGroup, error) {
	var out api.SecurityGroupList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/secgroups", projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return out.SecurityGroups, nil
}

// CreateSecurityGroup creates a security group.
func (c *Client) CreateSecurityGroup(ctx context.Context, project string, req api.SecurityGroupCreateRequest) (*model.SecurityGroup, error) {
	var out model.SecurityGroup
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/secgroups", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetSecurityGroup shows a security group.
func (c *Client) GetSecurityGroup(ctx context.Context, project, name string) (*model.SecurityGroup, error) {
	var out model.SecurityGroup
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/secgroups/"+url.PathEscape(name), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteSecurityGroup deletes a security group nothing uses.
func (c *Client) DeleteSecurityGroup(ctx context.Context, project, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/secgroups/"+url.PathEscape(name), projectQuery(project), nil, nil)
}

// AddRule adds a rule to a security group.
func (c *Client) AddRule(ctx context.Context, project, group string, r model.Rule) (*model.SecurityGroup, error) {
	var out model.SecurityGroup
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/secgroups/"+url.PathEscape(group)+"/rules", projectQuery(project), r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteRule deletes a rule of a security group by its id.
func (c *Client) DeleteRule(ctx context.Context, project, group, id string) (*model.SecurityGroup, error) {
	var out model.SecurityGroup
	if err := c.do(ctx, http.MethodDelete, api.Prefix+"/secgroups/"+url.PathEscape(group)+"/rules/"+url.PathEscape(id), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// --- VM NICs ---

// AddNIC adds a NIC to a VM (hot-plugged when it runs).
func (c *Client) AddNIC(ctx context.Context, project, vm string, nic model.NIC) (*model.VM, error) {
	var out model.VM
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/vms/"+url.PathEscape(vm)+"/nics", projectQuery(project), nic, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchNIC changes a NIC's security groups or rate limits, live.
func (c *Client) PatchNIC(ctx context.Context, project, vm, nic string, req api.NICPatchRequest) (*model.VM, error) {
	var out model.VM
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/vms/"+url.PathEscape(vm)+"/nics/"+url.PathEscape(nic), projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveNIC unplugs and removes a NIC.
func (c *Client) RemoveNIC(ctx context.Context, project, vm, nic string) (*model.VM, error) {
	var out model.VM
	if err := c.do(ctx, http.MethodDelete, api.Prefix+"/vms/"+url.PathEscape(vm)+"/nics/"+url.PathEscape(nic), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
