package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/energy"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// balanceEndpoints serve balancing settings, the balancer's plan and the
// energy report. The leader's controllers (internal/controller) write
// the plan and the ledger; these handlers only read them.
func (s *Server) balanceEndpoints() []endpoint {
	return []endpoint{
		{method: "GET", path: "/api/v1/cluster/balance", handle: s.getBalance, resp: model.BalanceSettings{}, status: 200},
		{method: "PATCH", path: "/api/v1/cluster/balance", handle: s.patchBalance, req: api.BalanceSettingsPatch{}, resp: model.BalanceSettings{}, status: 200},
		{method: "GET", path: "/api/v1/balance/plan", handle: s.getBalancePlan, resp: model.BalancePlan{}, status: 200},
		{method: "GET", path: "/api/v1/cluster/energy", handle: s.getEnergy, resp: api.EnergyReport{}, status: 200, query: []string{"vms"}},
	}
}

// balanceSettings reads the stored settings over the defaults.
func (s *Server) balanceSettings(ctx context.Context) (model.BalanceSettings, int64, error) {
	set := model.DefaultBalanceSettings()
	kv, err := s.cfg.Store.Get(ctx, store.BalanceKey)
	if errors.Is(err, store.ErrNotFound) {
		return set, 0, nil
	}
	if err != nil {
		return set, 0, err
	}
	if err := json.Unmarshal(kv.Value, &set); err != nil {
		return set, 0, fmt.Errorf("server: decode balance settings: %w", err)
	}
	return set, kv.ModRev, nil
}

func (s *Server) getBalance(w http.ResponseWriter, r *http.Request, _ *principal) error {
	set, _, err := s.balanceSettings(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, set)
	return nil
}

func (s *Server) patchBalance(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	var req api.BalanceSettingsPatch
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	for attempt := 0; attempt < 8; attempt++ {
		set, rev, err := s.balanceSettings(r.Context())
		if err != nil {
			return err
		}
		applyBalancePatch(&set, &req)
		if err := set.Validate(); err != nil {
			return err
		}
		if _, err := balance.NewPlanner(set.Policy, 1); err != nil {
			return fieldError("policy", "%v (see vpool sim policies)", err)
		}
		b, _ := json.Marshal(set)
		ok, _, err := s.cfg.Store.Txn(r.Context(), []store.Cond{store.IfRev(store.BalanceKey, rev)}, []store.Op{store.Put(store.BalanceKey, b)})
		if err != nil {
			return err
		}
		if ok {
			writeJSON(w, http.StatusOK, set)
			return nil
		}
	}
	return conflict("the balance settings keep changing; try again")
}

func applyBalancePatch(set *model.BalanceSettings, p *api.BalanceSettingsPatch) {
	setIf := func(dst *int, src *int) {
		if src != nil {
			*dst = *src
		}
	}
	setIfF := func(dst *float64, src *float64) {
		if src != nil {
			*dst = *src
		}
	}
	if p.Mode != nil {
		set.Mode = *p.Mode
	}
	if p.Policy != nil {
		set.Policy = *p.Policy
	}
	if p.Standby != nil {
		set.Power.Standby = *p.Standby
	}
	setIf(&set.IntervalSeconds, p.IntervalSeconds)
	setIf(&set.MaxMovesPerRound, p.MaxMovesPerRound)
	setIf(&set.MaxMovesPerHost, p.MaxMovesPerHost)
	setIf(&set.Power.MinHostsOn, p.MinHostsOn)
	setIf(&set.Power.IdleSeconds, p.IdleSeconds)
	setIfF(&set.Power.HeadroomPercent, p.HeadroomPercent)
	setIfF(&set.Energy.GridIntensity, p.GridIntensity)
	setIfF(&set.Energy.PUE, p.PUE)
}

func (s *Server) getBalancePlan(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	kv, err := s.cfg.Store.Get(r.Context(), store.BalancePlanKey)
	if errors.Is(err, store.ErrNotFound) {
		set, _, serr := s.balanceSettings(r.Context())
		if serr != nil {
			return serr
		}
		return notFound("no balance plan yet: the balancer (mode %s, policy %s) plans every %s on the leader", set.Mode, set.Policy, set.Interval())
	}
	if err != nil {
		return err
	}
	var plan model.BalancePlan
	if err := json.Unmarshal(kv.Value, &plan); err != nil {
		return fmt.Errorf("server: decode balance plan: %w", err)
	}
	writeJSON(w, http.StatusOK, plan)
	return nil
}

// getEnergy renders the leader's ledger with the configured grid. Hosts
// are shown to everyone; projects and VMs only to those who see them.
func (s *Server) getEnergy(w http.ResponseWriter, r *http.Request, p *principal) error {
	set, _, err := s.balanceSettings(r.Context())
	if err != nil {
		return err
	}
	rec, err := s.repo.EnergyLedger(r.Context())
	if err != nil {
		return err
	}
	l := energy.RestoreLedger(energy.LedgerState{Hosts: rec.HostJ, VMs: rec.VMJ, Projects: rec.ProjectJ, Total: rec.TotalJ})
	rep, err := l.Report(energy.Grid{IntensityGPerKWh: set.Energy.GridIntensity, PUE: set.Energy.PUE})
	if err != nil {
		return err
	}
	out := api.EnergyReport{Since: rec.Since, At: rec.At, GridIntensity: set.Energy.GridIntensity, PUE: set.Energy.PUE,
		TotalKWh: rep.TotalKWh, FacilityKWh: rep.FacilityKWh, CO2g: rep.CO2g, UnattributedKWh: rep.UnattributedKWh,
		Hosts: []api.EnergyLine{}, Projects: []api.EnergyLine{}}
	for _, l := range rep.Hosts {
		h := rec.Hosts[l.Name]
		out.Watts += h.Watts
		out.Hosts = append(out.Hosts, api.EnergyLine{Name: l.Name, KWh: l.KWh, FacilityKWh: l.FacilityKWh, CO2g: l.CO2g,
			Watts: h.Watts, State: h.State, PowerModel: h.PowerModel})
	}
	for _, l := range rep.Projects {
		if seesProject(p, l.Name) {
			out.Projects = append(out.Projects, api.EnergyLine{Name: l.Name, KWh: l.KWh, FacilityKWh: l.FacilityKWh, CO2g: l.CO2g})
		}
	}
	if !p.clusterAdmin() {
		tenantEnergy(&out)
	}
	if r.URL.Query().Get("vms") == "true" {
		for _, l := range rep.VMs {
			if project, _, ok := cutVMKey(l.Name); ok && seesProject(p, project) {
				out.VMs = append(out.VMs, api.EnergyLine{Name: l.Name, KWh: l.KWh, FacilityKWh: l.FacilityKWh, CO2g: l.CO2g})
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// tenantEnergy keeps a tenant to its project's figures: hosts are
// listed (name, state, power model) without their energy or draw, which
// other projects' load makes up, and the totals are the project's.
func tenantEnergy(out *api.EnergyReport) {
	for i, h := range out.Hosts {
		out.Hosts[i] = api.EnergyLine{Name: h.Name, State: h.State, PowerModel: h.PowerModel}
	}
	out.Watts, out.UnattributedKWh = 0, 0
	out.TotalKWh, out.FacilityKWh, out.CO2g = 0, 0, 0
	for _, l := range out.Projects {
		out.TotalKWh += l.KWh
		out.FacilityKWh += l.FacilityKWh
		out.CO2g += l.CO2g
	}
}

func cutVMKey(key string) (project, name string, ok bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", "", false
}

// hostPower answers the calling host's desired power state; a sleeping
// simulated host polls it.
func (s *Server) hostPower(w http.ResponseWriter, r *http.Request, host string) error {
	h, err := s.repo.GetHost(r.Context(), host)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("host %s is not registered", host)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.HostPowerState{Desired: desiredPower(h)})
	return nil
}

// desiredPower is "standby" while the power controller wants the host
// asleep, else "on".
func desiredPower(h *model.Host) string {
	if h != nil && h.State == model.HostStandby && h.Power != nil && h.Power.Desired == model.HostPowerStandby {
		return model.HostPowerStandby
	}
	return model.HostPowerOn
}
