package server

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// MigrationPlanner runs migration pre-checks on the stored state: a
// Placer that also has it (controller.DryRunner does) serves the
// migration and drain endpoints; without one they answer 501.
// Refusals wrap state.ErrRefused and say why.
type MigrationPlanner interface {
	PlanMigration(ctx context.Context, vm *model.VM, to string) (target string, mode model.MigrationMode, expl *model.Explanation, err error)
	PlanDrain(ctx context.Context, host string) (movable, blocked []api.DrainPlanItem, err error)
}

func (s *Server) migrationEndpoints() []endpoint {
	scoped := []string{"project"}
	return []endpoint{
		{method: "GET", path: "/api/v1/migrations", handle: s.listMigrations, resp: api.MigrationList{}, status: 200, query: []string{"project", "all-projects"}},
		{method: "POST", path: "/api/v1/migrations", handle: s.createMigration, req: api.MigrationRequest{}, resp: model.Migration{}, status: 201, query: scoped},
		{method: "GET", path: "/api/v1/migrations/{id}", handle: s.getMigration, resp: model.Migration{}, status: 200},
		{method: "POST", path: "/api/v1/migrations/{id}/cancel", handle: s.cancelMigration, resp: model.Migration{}, status: 202},
		{method: "POST", path: "/api/v1/hosts/{name}/drain", handle: s.drainHost, req: api.DrainRequest{}, resp: api.DrainResponse{}, status: 202},
		{method: "POST", path: "/api/v1/hosts/{name}/undrain", handle: s.undrainHost, resp: model.Host{}, status: 200},
	}
}

func (s *Server) migrationPlanner() (MigrationPlanner, error) {
	if mp, ok := s.cfg.Placer.(MigrationPlanner); ok {
		return mp, nil
	}
	return nil, errf(http.StatusNotImplemented, api.CodeUnavailable, "", "this server has no migration planner")
}

// refusal maps migration pre-check and state errors to API errors.
func refusal(err error) error {
	switch {
	case errors.Is(err, state.ErrRefused), errors.Is(err, state.ErrMigrating), errors.Is(err, state.ErrMoved):
		return conflict("%s", strings.TrimPrefix(err.Error(), "state: "))
	}
	return err
}

func (s *Server) listMigrations(w http.ResponseWriter, r *http.Request, p *principal) error {
	project := ""
	if all, _ := strconv.ParseBool(r.URL.Query().Get("all-projects")); all {
		if err := requireAdmin(p); err != nil {
			return forbidden("all-projects needs an admin token")
		}
	} else {
		var err error
		if project, err = s.scope(r, p, false); err != nil {
			return err
		}
	}
	ms, _, err := s.repo.ListMigrations(r.Context(), project)
	if err != nil {
		return err
	}
	out := api.MigrationList{Items: make([]model.Migration, 0, len(ms))}
	for _, m := range ms {
		out.Items = append(out.Items, withoutKey(*m))
	}
	reply(w, http.StatusOK, p, out)
	return nil
}

// withoutKey returns m with the one-time key taken out of its target
// address. The key authenticates the source agent to the target's control
// channel: only the two agents need it, and they read it from the agent
// API; no user, admins included, is shown it (host and ports stay for
// admins; tenants see no address at all).
func withoutKey(m model.Migration) model.Migration {
	if m.TargetAddr == "" {
		return m
	}
	u, err := url.Parse(m.TargetAddr)
	if err != nil {
		m.TargetAddr = ""
		return m
	}
	q := u.Query()
	q.Del("key")
	u.RawQuery = q.Encode()
	m.TargetAddr = u.String()
	return m
}

func (s *Server) createMigration(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return forbidden("moving VMs between hosts needs an admin token")
	}
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.MigrationRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("vm", req.VM); err != nil {
		return err
	}
	if req.To != "" {
		if err := model.ValidName("to", req.To); err != nil {
			return err
		}
	}
	if req.BandwidthBps < 0 || req.BandwidthBps > model.MaxMigrationBandwidth {
		return fieldError("bandwidthBps", "must be 0 (the driver's default) or a rate of at most %d bytes/s (got %d)", model.MaxMigrationBandwidth, req.BandwidthBps)
	}
	if d := req.DowntimeLimitMs; d != nil && (*d <= 0 || *d > model.MaxDowntimeLimitMs) {
		return fieldError("downtimeLimitMs", "must be 1 to %d ms (got %d)", model.MaxDowntimeLimitMs, *d)
	}
	mp, err := s.migrationPlanner()
	if err != nil {
		return err
	}
	ctx := r.Context()
	vm, err := s.repo.GetVM(ctx, project, req.VM)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("VM %s/%s not found", project, req.VM)
	}
	if err != nil {
		return err
	}
	policy, _, err := s.repo.GetPolicy(ctx)
	if err != nil {
		return err
	}
	opts, err := policy.MigrationOptions(&vm.Spec, req.DowntimeLimitMs, req.AllowPostCopy)
	if err != nil {
		return err
	}
	opts.BandwidthBps = req.BandwidthBps
	target, mode, expl, err := mp.PlanMigration(ctx, vm, req.To)
	if err != nil {
		return refusal(err)
	}
	m := &model.Migration{
		Meta: model.Meta{Project: project}, VM: vm.Name, VMUID: vm.UID, Source: vm.Status.Host, Target: target, Mode: mode,
		Phase: model.MigrationPending, Options: opts, Spec: vm.Spec, Explanation: expl,
	}
	if req.DryRun {
		writeJSON(w, http.StatusOK, withoutUserData(m))
		return nil
	}
	out, err := s.repo.CreateMigration(ctx, m)
	if err != nil {
		return refusal(err)
	}
	s.log.Info("migration requested", "id", out.Name, "vm", out.VMKey(), "from", out.Source, "to", out.Target, "mode", out.Mode)
	writeJSON(w, http.StatusCreated, withoutUserData(out))
	return nil
}

// visibleMigration reads a migration the caller may see (404 otherwise).
func (s *Server) visibleMigration(r *http.Request, p *principal) (*model.Migration, error) {
	id := r.PathValue("id")
	m, err := s.repo.GetMigration(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !seesProject(p, m.Project)) {
		return nil, notFound("migration %q not found", id)
	}
	return m, err
}

func (s *Server) getMigration(w http.ResponseWriter, r *http.Request, p *principal) error {
	m, err := s.visibleMigration(r, p)
	if err != nil {
		return err
	}
	out := withoutKey(*m)
	reply(w, http.StatusOK, p, &out)
	return nil
}

func (s *Server) cancelMigration(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	m, err := s.visibleMigration(r, p)
	if err != nil {
		return err
	}
	out, err := s.repo.UpdateMigration(r.Context(), m.Name, func(c *model.Migration) error {
		switch {
		case c.Phase.Final():
			return conflict("migration %s is already %s", c.Name, c.Phase)
		case c.Phase == model.MigrationSwitchingOver:
			return conflict("migration %s is switching over: too late to cancel", c.Name)
		case c.CancelRequested:
			return state.ErrSkip
		}
		c.CancelRequested = true
		return nil
	})
	if err != nil {
		return err
	}
	c := withoutKey(*out)
	reply(w, http.StatusAccepted, p, &c)
	return nil
}

func (s *Server) drainHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	name := r.PathValue("name")
	var req api.DrainRequest
	if he := decodeOptionalJSON(w, r, &req); he != nil {
		return he
	}
	if req.MaxConcurrent < 0 || req.MaxConcurrent > 64 {
		return fieldError("maxConcurrent", "must be 1 to 64 (0: the default %d), got %d", model.DefaultDrainConcurrency, req.MaxConcurrent)
	}
	if req.MaxConcurrent == 0 {
		req.MaxConcurrent = model.DefaultDrainConcurrency
	}
	mp, err := s.migrationPlanner()
	if err != nil {
		return err
	}
	h, err := s.repo.UpdateHostFilters(r.Context(), name, func(h *model.Host) error {
		h.State = model.HostMaintenance
		if h.Drain == nil || h.Drain.Done {
			h.Drain = &model.HostDrain{StartedAt: s.now()}
		}
		h.Drain.MaxConcurrent = req.MaxConcurrent
		return nil
	})
	if err != nil {
		return hostNotFound(err, name)
	}
	movable, blocked, err := mp.PlanDrain(r.Context(), name)
	if err != nil {
		return err
	}
	a, err := s.repo.GetAllocation(r.Context(), name)
	if err != nil {
		return err
	}
	withAllocation(h, a)
	s.log.Info("host drain requested", "host", name, "movable", len(movable), "blocked", len(blocked))
	writeJSON(w, http.StatusAccepted, api.DrainResponse{Host: *h, Movable: movable, Blocked: blocked})
	return nil
}

func (s *Server) undrainHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	name := r.PathValue("name")
	alive := false
	if _, err := s.cfg.Store.Get(r.Context(), store.AliveKey(name)); err == nil {
		alive = true
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	h, err := s.repo.UpdateHostFilters(r.Context(), name, func(h *model.Host) error {
		if h.Drain == nil && h.State != model.HostMaintenance {
			return state.ErrSkip
		}
		h.Drain = nil
		if h.State == model.HostMaintenance {
			h.State = model.HostDown
			if alive {
				h.State = model.HostReady
			}
		}
		return nil
	})
	if err != nil {
		return hostNotFound(err, name)
	}
	a, err := s.repo.GetAllocation(r.Context(), name)
	if err != nil {
		return err
	}
	withAllocation(h, a)
	writeJSON(w, http.StatusOK, h)
	return nil
}
