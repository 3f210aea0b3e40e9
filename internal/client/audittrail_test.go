package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// auditServer serves heads whose sequence numbers come from heads, one
// per read (the last repeats), and the records 1..records.
func auditServer(t *testing.T, heads []int64, records int64) (*Client, *atomic.Int32) {
	return auditServerAnchored(t, heads, records, 0)
}

// auditServerAnchored is auditServer with the chain anchored at record
// anchor (0: no anchor).
func auditServerAnchored(t *testing.T, heads []int64, records, anchor int64) (*Client, *atomic.Int32) {
	var headReads atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case api.Prefix + "/audit/head":
			i := min(int(headReads.Add(1))-1, len(heads)-1)
			var hv api.AuditHeadView
			hv.Head.Seq = heads[i]
			if anchor > 0 {
				hv.Anchor = &model.AuditSignature{Seq: anchor}
			}
			_ = json.NewEncoder(w).Encode(hv)
		case api.Prefix + "/audit/records":
			from, _ := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
			var out api.AuditRecords
			for s := from; s <= records; s++ {
				out.Records = append(out.Records, json.RawMessage(fmt.Sprintf(`{"seq":%d}`, s)))
			}
			_ = json.NewEncoder(w).Encode(out)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	return c, &headReads
}

// A record appended between the head's read and the records' is not
// taken for a rolled-back head: the head is read again and has moved.
func TestAuditTrailReadsTheHeadWithTheRecords(t *testing.T) {
	c, reads := auditServer(t, []int64{2, 3}, 3)
	hv, recs, err := c.AuditTrail(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if hv.Head.Seq != 3 || len(recs) != 3 || reads.Load() != 2 {
		t.Fatalf("head %d with %d records after %d head reads; want head 3 with 3 records after 2", hv.Head.Seq, len(recs), reads.Load())
	}
}

// A head that stays behind records read before it is returned as it
// is, for the verifier to report.
func TestAuditTrailKeepsAHeadThatStaysBehind(t *testing.T) {
	c, _ := auditServer(t, []int64{2}, 3)
	hv, recs, err := c.AuditTrail(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if hv.Head.Seq != 2 || len(recs) != 3 {
		t.Fatalf("head %d with %d records; want head 2 with 3 records", hv.Head.Seq, len(recs))
	}
}

// From 0 the trail starts after the head's anchor, with the head read
// once: vpool audit verify reads no second head for the anchor.
func TestAuditTrailFromTheAnchor(t *testing.T) {
	c, reads := auditServerAnchored(t, []int64{5}, 5, 2)
	hv, recs, err := c.AuditTrail(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if hv.Head.Seq != 5 || len(recs) != 3 || string(recs[0]) != `{"seq":3}` || reads.Load() != 1 {
		t.Fatalf("head %d with %d records (first %s) after %d head reads; want head 5 with records 3 to 5 after 1", hv.Head.Seq, len(recs), recs[0], reads.Load())
	}
}
