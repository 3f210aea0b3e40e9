package cli

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func (f *fakeServer) complianceHandlers() map[string]handler {
	return map[string]handler{
		"GET /api/v1/compliance": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			eu, us := map[string]string{"region": "eu"}, map[string]string{"region": "us"}
			t1, t2 := now.Add(-48*time.Hour), now.Add(-24*time.Hour)
			rep := api.ComplianceReport{FirstRecord: 1, Since: now.Add(-72 * time.Hour), VMs: []model.ComplianceVM{
				{Project: "default", VM: "db", Constraint: eu, Host: "h1", Stays: []model.HostStay{
					{Host: "h1", Since: t1, Until: t2, HostLabels: eu, Recorded: true, OK: true},
					{Host: "h2", Since: t2, HostLabels: us, Recorded: true}}, Breach: true,
					Reasons: []string{"ran on h2 from 2030-01-01T03:04:05Z (labels region=us; required region=eu)"}},
				{Project: "default", VM: "web", Host: "h3", Stays: []model.HostStay{{Host: "h3", OK: true}}},
			}}
			rep.Breaches = 1
			if r.URL.Query().Get("breaches") == "true" {
				rep.VMs = rep.VMs[:1]
			}
			return rep, nil
		},
		// the dashboard's charts; the CLI does not read it
		"GET /api/v1/cluster/history": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return api.ClusterHistory{Samples: []api.HistorySample{}}, nil
		},
	}
}

func TestComplianceReport(t *testing.T) {
	f := newFake(t)
	res := f.cli(t, "compliance", "report")
	if res.code != 1 || !strings.Contains(res.stderr, "breaches found: 1 VMs") {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	golden(t, "compliance-report", res.stdout)
}
