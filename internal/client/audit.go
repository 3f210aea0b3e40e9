package client

import (
	"context"
	"encoding/json"
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

// auditTrailTries bounds how often AuditTrail reads the head again.
const auditTrailTries = 5

// EachAuditRecord calls each with every stored record from seq from to
// the end, page by page, exactly as stored.
func (c *Client) EachAuditRecord(ctx context.Context, from int64, each func(raw []byte) error) error {
	for from > 0 {
		page, err := c.AuditRecords(ctx, from, 0)
		if err != nil {
			return err
		}
		for _, r := range page.Records {
			if err := each(r); err != nil {
				return err
			}
		}
		from = page.Next
	}
	return nil
}

// AuditTrail reads the signed head and the stored records from from on
// (from 0: from the record after the head's anchor, where the store's
// chain starts), such that the head is the one written with the last
// record read. A batch of records and its head are written in one
// transaction, but reading them takes two requests, and a batch
// appended in between would look like records the head does not vouch
// for (a rolled-back head). So when the records run past the head, the
// head is read again (an honest one has moved with them) and the
// records it adds are fetched, up to auditTrailTries times. A head that
// does not catch up is returned as it is, for the verifier to report.
func (c *Client) AuditTrail(ctx context.Context, from int64) (*api.AuditHeadView, [][]byte, error) {
	hv, err := c.AuditHead(ctx)
	if err != nil {
		return nil, nil, err
	}
	if from <= 0 {
		from = 1
		if hv.Anchor != nil {
			from = hv.Anchor.Seq + 1
		}
	}
	var recs [][]byte
	last := from - 1
	keep := func(r []byte) error {
		var s struct {
			Seq int64 `json:"seq"`
		}
		if json.Unmarshal(r, &s) == nil && s.Seq > last {
			last = s.Seq
		}
		recs = append(recs, r)
		return nil
	}
	if err := c.EachAuditRecord(ctx, from, keep); err != nil {
		return nil, nil, err
	}
	for try := 0; try < auditTrailTries && last > hv.Head.Seq; try++ {
		again, err := c.AuditHead(ctx)
		if err != nil {
			return nil, nil, err
		}
		if again.Head.Seq < last {
			return again, recs, nil // read after the records, still behind them
		}
		hv = again
		if err := c.EachAuditRecord(ctx, last+1, keep); err != nil {
			return nil, nil, err
		}
	}
	return hv, recs, nil
}
