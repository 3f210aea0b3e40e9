package cli

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func (f *fakeServer) usageHandlers() map[string]handler {
	sites := map[string]float64{"eu-west": 56}
	return map[string]handler{
		"GET /api/v1/usage": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			from, _ := time.Parse(time.RFC3339, r.URL.Query().Get("from"))
			to, _ := time.Parse(time.RFC3339, r.URL.Query().Get("to"))
			web := model.UsageFigures{VCPUHours: 48, MemGiBHours: 96, DiskGiBHours: 480, NetBytes: 123456, EnergyKWh: 1.234, CO2Grams: 92.55}
			db := model.UsageFigures{DiskGiBHours: 2400}
			rep := api.UsageReport{From: from, To: to, Total: web.Add(db), Projects: []api.ProjectUsage{{Project: "default", Total: web.Add(db)}}}
			if r.URL.Query().Get("vms") == "true" {
				rep.Projects[0].VMs = []api.VMUsageLine{{VM: "db", Deleted: true, UsageFigures: db}, {VM: "web", UsageFigures: web}}
			}
			return rep, nil
		},
		"GET /api/v1/cluster/metering": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return model.MeteringSettings{Sites: sites}, nil
		},
		"PATCH /api/v1/cluster/metering": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var p api.MeteringSettingsPatch
			if e := decodeStrict(body, &p); e != nil {
				return nil, e
			}
			for k, v := range p.Sites {
				if v < 0 {
					delete(sites, k)
				} else {
					sites[k] = v
				}
			}
			return model.MeteringSettings{Sites: sites}, nil
		},
	}
}

func TestUsageCommands(t *testing.T) {
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"usage-report", []string{"usage", "report", "--from", "2030-01-01", "--to", "2030-01-03", "--vms"}},
		{"usage-report-csv", []string{"usage", "report", "--from", "2030-01-01", "--to", "2030-01-03", "-o", "csv"}},
		{"usage-sites", []string{"usage", "sites", "us-east=380.5", "eu-west-"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			f := newFake(t)
			res := f.cli(t, tc.args...)
			if res.code != 0 {
				t.Fatalf("exit %d: %s", res.code, res.stderr)
			}
			golden(t, tc.golden, res.stdout)
		})
	}
	f := newFake(t)
	if res := f.cli(t, "usage", "report", "--from", "March"); res.code != 2 || !strings.Contains(res.stderr, "--from") {
		t.Fatalf("a bad --from: exit %d %q", res.code, res.stderr)
	}
	if res := f.cli(t, "usage", "sites", "eu=-3"); res.code != 2 {
		t.Fatalf("a negative intensity: exit %d %q", res.code, res.stderr)
	}
	res := f.cli(t, "usage", "report", "-o", "json")
	var rep api.UsageReport
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &rep) != nil || rep.Total.VCPUHours != 48 {
		t.Fatalf("json: exit %d %q", res.code, res.stdout)
	}
}
