package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// AuditQuery selects audit records (GET /audit).
type AuditQuery struct {
	Project     string // "" with AllProjects: every project (admins)
	AllProjects bool
	Kind        string
	Object      string
	Limit       int
	Before      int64
	After       int64
}

func (q AuditQuery) values() url.Values {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	if !q.AllProjects {
		set("project", q.Project)
	}
	set("kind", q.Kind)
	set("object", q.Object)
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Before > 0 {
		v.Set("before", strconv.FormatInt(q.Before, 10))
	}
	if q.After > 0 {
		v.Set("after", strconv.FormatInt(q.After, 10))
	}
	return v
}

// Audit returns the newest audit records matching q (newest first).
func (c *Client) Audit(ctx context.Context, q AuditQuery) (*api.AuditList, error) {
	var out api.AuditList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/audit", q.values(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditRecords returns the stored bytes of records from seq from on (at
// most limit; 0: the server's maximum).
func (c *Client) AuditRecords(ctx context.Context, from int64, limit int) (*api.AuditRecords, error) {
	q := url.Values{"from": {strconv.FormatInt(from, 10)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out api.AuditRecords
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/audit/records", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditHead returns the signed head, the anchor and the signing key.
func (c *Client) AuditHead(ctx context.Context) (*api.AuditHeadView, error) {
	var out api.AuditHeadView
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/audit/head", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditKey returns the servers' public audit signing key.
func (c *Client) AuditKey(ctx context.Context) (*model.AuditKey, error) {
	var out model.AuditKey
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/audit/key", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
