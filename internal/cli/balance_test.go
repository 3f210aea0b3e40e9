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

// balanceHandlers fake the balancing and energy endpoints.
func (f *fakeServer) balanceHandlers() map[string]handler {
	set := model.DefaultBalanceSettings()
	return map[string]handler{
		"GET /api/v1/cluster/balance": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return set, nil
		},
		"PATCH /api/v1/cluster/balance": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			// Apply the patch the way the server does, on a JSON level.
			var p api.BalanceSettingsPatch
			if e := decodeStrict(body, &p); e != nil {
				return nil, e
			}
			if p.Mode != nil {
				set.Mode = *p.Mode
			}
			if p.Policy != nil {
				set.Policy = *p.Policy
			}
			if p.IntervalSeconds != nil {
				set.IntervalSeconds = *p.IntervalSeconds
			}
			if p.Standby != nil {
				set.Power.Standby = *p.Standby
			}
			if p.MinHostsOn != nil {
				set.Power.MinHostsOn = *p.MinHostsOn
			}
			if p.PUE != nil {
				set.Energy.PUE = *p.PUE
			}
			if err := set.Validate(); err != nil {
				fe := err.(*model.FieldError)
				return nil, fail(400, api.CodeInvalidField, fe.Field, "%s", fe.Message)
			}
			return set, nil
		},
		"GET /api/v1/balance/plan": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return model.BalancePlan{Time: now.Add(-time.Minute), Mode: model.BalanceRecommend, Policy: "vpool", Samples: 6,
				Note: "1 overloaded hosts, 1 relief moves, 1 consolidation moves",
				Hosts: []model.BalanceHost{
					{Name: "h1", State: model.HostReady, CPUPercent: 110, PlanPercent: 82.5, VMs: 3, PowerModel: "ml110g5", Watts: 135},
					{Name: "h2", State: model.HostReady, CPUPercent: 40, PlanPercent: 70, VMs: 3, PowerModel: "ml110g5", Watts: 110},
					{Name: "h3", State: model.HostReady, CPUPercent: 5, PlanPercent: 0, VMs: 0, PowerModel: "ml110g4", Watts: 87.6},
				},
				Moves: []model.BalanceMove{
					{VM: "default/web1", From: "h1", To: "h2", Reason: "overload", CPUPercent: 55, Detail: "host h1 is overloaded (demand 110% of its CPU, or rising past 100%): move default/web1 to h2"},
					{VM: "default/db", From: "h3", To: "h2", Reason: "underload", CPUPercent: 10, Detail: "host h3 is lightly loaded (5%) and all its VMs fit on hosts that are on: move default/db to h2 so that h3 can go to standby"},
				}}, nil
		},
		"GET /api/v1/cluster/energy": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			rep := api.EnergyReport{Since: now.Add(-24 * time.Hour), At: now, GridIntensity: 400, PUE: 1.5,
				TotalKWh: 4.2, FacilityKWh: 6.3, CO2g: 2520, UnattributedKWh: 0.4, Watts: 245,
				Hosts: []api.EnergyLine{
					{Name: "h1", State: model.HostReady, PowerModel: "ml110g5", Watts: 240, KWh: 4.08, FacilityKWh: 6.12, CO2g: 2448},
					{Name: "h2", State: model.HostStandby, PowerModel: "table:default-8cpu", Watts: 5, KWh: 0.12, FacilityKWh: 0.18, CO2g: 72},
				},
				Projects: []api.EnergyLine{{Name: "default", KWh: 3.8, FacilityKWh: 5.7, CO2g: 2280}}}
			if r.URL.Query().Get("vms") == "true" {
				rep.VMs = []api.EnergyLine{{Name: "default/web1", KWh: 3.8, FacilityKWh: 5.7, CO2g: 2280}}
			}
			return rep, nil
		},
	}
}

func TestBalanceCommands(t *testing.T) {
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"balance-show", []string{"balance", "show"}},
		{"balance-plan", []string{"balance", "plan"}},
		{"cluster-energy", []string{"cluster", "energy", "--vms"}},
		{"balance-set", []string{"balance", "set", "--mode", "automatic", "--interval", "10m", "--standby", "--min-hosts-on", "2"}},
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
}

func TestBalanceSetSendsOnlyChangedFields(t *testing.T) {
	f := newFake(t)
	res := f.cli(t, "balance", "set", "--policy", "drs", "--pue", "1.1", "-o", "json")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	var sent map[string]any
	if err := json.Unmarshal([]byte(f.lastWrite(t).Body), &sent); err != nil {
		t.Fatal(err)
	}
	if len(sent) != 2 || sent["policy"] != "drs" || sent["pue"] != 1.1 {
		t.Fatalf("sent %v", sent)
	}
	var got model.BalanceSettings
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil || got.Policy != "drs" {
		t.Fatalf("printed %q (%v)", res.stdout, err)
	}
	if res := f.cli(t, "balance", "set"); res.code != 2 || !strings.Contains(res.stderr, "nothing to change") {
		t.Fatalf("no flags: exit %d %q", res.code, res.stderr)
	}
	if res := f.cli(t, "balance", "set", "--pue", "0.5"); res.code != 1 || !strings.Contains(res.stderr, "pue") {
		t.Fatalf("bad pue: exit %d %q", res.code, res.stderr)
	}
}
