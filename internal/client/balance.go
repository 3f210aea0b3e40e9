package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// BalanceSettings returns the cluster's balancing, power and energy
// settings.
func (c *Client) BalanceSettings(ctx context.Context) (*model.BalanceSettings, error) {
	var out model.BalanceSettings
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/cluster/balance", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PatchBalanceSettings changes the fields set in p and returns the
// stored settings.
func (c *Client) PatchBalanceSettings(ctx context.Context, p api.BalanceSettingsPatch) (*model.BalanceSettings, error) {
	var out model.BalanceSettings
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/cluster/balance", nil, p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// BalancePlan returns the balancer's last plan with its reasons.
func (c *Client) BalancePlan(ctx context.Context) (*model.BalancePlan, error) {
	var out model.BalancePlan
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/balance/plan", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Energy returns the energy report; withVMs adds one line per VM.
func (c *Client) Energy(ctx context.Context, withVMs bool) (*api.EnergyReport, error) {
	var q url.Values
	if withVMs {
		q = url.Values{"vms": {"true"}}
	}
	var out api.EnergyReport
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/cluster/energy", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
