package client

import (
	"context"
	"net/http"

	"github.com/vpool/vpool/internal/api"
)

// Members lists the control plane's servers (docs/ha.md).
func (c *Client) Members(ctx context.Context) (*api.MemberList, error) {
	var out api.MemberList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/cluster/members", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AddMember issues a single-use token with which one new server, of the
// given name, joins the control plane (vpool server --join).
func (c *Client) AddMember(ctx context.Context, req api.MemberAddRequest) (*api.MemberAddResponse, error) {
	var out api.MemberAddResponse
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/cluster/members", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveMember removes a server's store member; that server stops.
func (c *Client) RemoveMember(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/cluster/members/"+esc(name), nil, nil, nil)
}
