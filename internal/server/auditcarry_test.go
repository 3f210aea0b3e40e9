package server

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/auditlog"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// TestCreateCarriesItsAuditRecord: a VM create writes its audit intent
// in the create's own transaction (the VM and the intent have one
// revision), so that when the server dies before its appender linked
// the record — here it never does: its batches wait an hour — the next
// run of the server links it: a change acknowledged to the client is
// never missing from the trail. The project's member sees the record.
func TestCreateCarriesItsAuditRecord(t *testing.T) {
	ctx := context.Background()
	ts := startServer(t, nil, func(c *Config) { c.AuditLog.CarriedLinger = time.Hour })
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "alpha"}, nil)
	member := ts.tokenFor("alpha", model.RoleMember)
	ts.mustCall(201, "POST", "/api/v1/vms?project=alpha", member, vmReq("web1"), nil)

	vm, err := ts.st.Get(ctx, store.VMKey("alpha", "web1"))
	if err != nil {
		t.Fatal(err)
	}
	kvs, _, err := ts.st.List(ctx, store.AuditPendingPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var intent *model.AuditRecord
	for _, kv := range kvs {
		var r model.AuditRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			t.Fatal(err)
		}
		if r.Object == "vm/alpha/web1" {
			if kv.ModRev != vm.CreateRev {
				t.Fatalf("the intent was written at revision %d, the VM at %d: not one transaction", kv.ModRev, vm.CreateRev)
			}
			intent = &r
		}
	}
	if intent == nil || intent.Action != "POST /api/v1/vms" || intent.Project != "alpha" || intent.Actor == nil || intent.Actor.Role != model.RoleMember {
		t.Fatalf("the create's intent: %+v (of %d intents)", intent, len(kvs))
	}

	// the server dies with the record in its queue; its next run starts
	next, err := auditlog.New(auditlog.Config{Store: ts.st, Signer: ts.audit.Signer(), Server: ts.cfg.Name})
	if err != nil {
		t.Fatal(err)
	}
	next.Start()
	defer next.Close()
	if err := next.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r := findRecord(ts.auditList(member, "limit=100").Items, "POST /api/v1/vms", "vm/alpha/web1")
	if r == nil || r.Reason != auditlog.RecoveredReason || r.Outcome != "ok" || r.Actor.TokenID == "" {
		t.Fatalf("the member's view of the recovered create: %+v", r)
	}
	rep, err := auditlog.VerifyStore(ctx, ts.st, ts.audit.Signer().Public(), time.Now(), time.Minute)
	if err != nil || rep.Bad != nil {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
