package ha

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

// checkAuditAfterFailover reads the audit trail through a surviving
// server and verifies it with the published key, as `vpool audit verify`
// does: the chain written by three servers across a kill -9 of the
// leader is whole, the survivors kept signing the head with the one
// sealed key (the seal key came with the join: the head verifies and was
// signed after the kill), and the new leader's controllers recorded
// their decisions.
func checkAuditAfterFailover(t *testing.T, survivor *srv, killed string, killedAt time.Time) {
	t.Helper()
	ctx := context.Background()
	c := survivor.Client
	hv, recs, rep := fetchAndVerify(ctx, t, c)
	if rep.Bad != nil {
		t.Fatalf("the audit trail after the failover: %v", rep.Bad)
	}
	if !hv.Head.Time.After(killedAt) {
		t.Errorf("the head was last signed at %v, before the kill at %v", hv.Head.Time, killedAt)
	}
	writers := map[string]int{}
	decisionsAfter := 0
	for _, b := range recs {
		var r model.AuditRecord
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		writers[r.Server]++
		if r.Kind == model.AuditKindDecision && r.Server != killed && r.Time.After(killedAt) {
			decisionsAfter++
		}
	}
	t.Logf("audit after the failover: %d records, %d checkpoints, signed through %d, written by %v, %d decisions by the new leader",
		rep.Records, rep.Checkpoints, rep.SignedThrough, writers, decisionsAfter)
	if decisionsAfter == 0 {
		t.Error("the new leader's controllers recorded no decision")
	}
	if len(writers) < 2 {
		t.Errorf("records written by %v only: the survivors wrote none", writers)
	}
}

// fetchAndVerify reads the head and every stored record over the API and
// verifies them with the published key.
func fetchAndVerify(ctx context.Context, t *testing.T, c *client.Client) (*api.AuditHeadView, [][]byte, *audit.Report) {
	t.Helper()
	// the head read with the records (the survivors keep appending)
	hv, recs, err := c.AuditTrail(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	key, err := audit.ParsePublicKey(hv.Key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	h := hv.Head.AuditSignature
	return hv, recs, audit.Verify(audit.Input{Records: recs, Key: key, Anchor: hv.Anchor, Head: &h, Now: time.Now(),
		MaxHeadAge: time.Duration(hv.MaxHeadAge) * time.Second})
}
