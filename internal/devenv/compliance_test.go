package devenv_test

import (
	"context"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestComplianceFromTheAuditTrail: a VM that must stay in region eu is
// placed and then drained by the real controllers, over sim agents;
// the compliance report reads its stays from the audit trail, and flags
// a breach once the operator relabels the host it runs on.
func TestComplianceFromTheAuditTrail(t *testing.T) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := startCluster(t, devenv.ServerConfig{Store: st}, 3)
	ctx := context.Background()
	for h, region := range map[string]string{"h1": "eu", "h2": "eu", "h3": "us"} {
		if _, err := cl.c.PatchHost(ctx, h, api.HostPatchRequest{Labels: map[string]string{"region": region}}); err != nil {
			t.Fatal(err)
		}
	}
	eu := map[string]string{"region": "eu"}
	if _, err := cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "data", Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
		Placement: model.Placement{RequiredLabels: eu}}}); err != nil {
		t.Fatal(err)
	}
	first := cl.waitPhase("data", model.PhaseRunning).Status.Host
	if _, err := cl.c.DrainHost(ctx, first, 0); err != nil {
		t.Fatal(err)
	}
	var second string
	cl.eventually("the drain moves data", func() bool {
		vm, err := cl.c.GetVM(ctx, api.DefaultProject, "data")
		second = vm.Status.Host
		return err == nil && second != first && vm.Status.Migration == "" && vm.Status.Phase == model.PhaseRunning
	})
	if second == "h3" {
		t.Fatalf("the drain moved a region=eu VM to h3 (region=us)")
	}
	var rep *api.ComplianceReport
	// the move's end is recorded by the migration controller after the
	// VM's record shows the new host, and queued for up to 25 ms
	cl.eventually("the report shows both stays from the trail", func() bool {
		var err error
		rep, err = cl.c.Compliance(ctx, "", false, false)
		return err == nil && len(rep.VMs) == 1 && len(rep.VMs[0].Stays) == 2 && rep.VMs[0].Stays[1].Recorded
	})
	c := rep.VMs[0]
	if c.Breach || c.Stays[0].Host != first || c.Stays[1].Host != second || c.Stays[0].Until.IsZero() || !c.Stays[1].Until.IsZero() ||
		c.Stays[1].HostLabels["region"] != "eu" || c.Constraint["region"] != "eu" {
		t.Fatalf("report %+v", c)
	}
	// the operator relabels the host the VM runs on: a breach, now
	if _, err := cl.c.PatchHost(ctx, second, api.HostPatchRequest{Labels: map[string]string{"region": "us"}}); err != nil {
		t.Fatal(err)
	}
	rep, err := cl.c.Compliance(ctx, "", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Breaches != 1 || len(rep.VMs) != 1 || !strings.Contains(strings.Join(rep.VMs[0].Reasons, ";"), "runs now on "+second) {
		t.Fatalf("after the relabel: %+v", rep)
	}
	// every decision is in the chain, which verifies
	if err := cl.srv.Audit().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := cl.c.Audit(ctx, clientAuditQuery("decision"))
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, r := range l.Items {
		actions[r.Action]++
	}
	if actions[model.AuditPlace] != 1 || actions[model.AuditMoveStart] != 1 || actions[model.AuditMoved] != 1 {
		t.Fatalf("decisions recorded: %v", actions)
	}
}

func clientAuditQuery(kind string) client.AuditQuery {
	return client.AuditQuery{AllProjects: true, Kind: kind, Limit: 100}
}
