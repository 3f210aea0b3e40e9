package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/metrics"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/watchcache"
)

// withAllocation fills a host's Allocated and VMs from its allocation.
func withAllocation(h *model.Host, a *model.Allocation) {
	if a != nil {
		h.Allocated = a.Used
		h.VMs = len(a.VMs)
	}
}

// listHosts answers hosts from the cache (paged like VMs), each with
// its allocation; a tenant sees only what tenantHost keeps.
func (s *Server) listHosts(w http.ResponseWriter, r *http.Request, p *principal) error {
	a, err := parseListArgs(r, store.HostsPrefix)
	if err != nil {
		return err
	}
	if err := s.sync(w, r, a); err != nil {
		return err
	}
	var mine map[string]placement
	if !p.clusterAdmin() {
		if mine, err = s.projectPlacements(r.Context(), p.tok.Project); err != nil {
			return err
		}
	}
	items, rev, more := s.view.page(s.view.hosts, store.HostsPrefix, a)
	out := api.HostList{Items: make([]model.Host, 0, len(items)), Revision: rev}
	if more {
		out.Continue = encodeToken(items[len(items)-1].Key, rev)
	}
	hosts := make([]model.Host, 0, len(items))
	s.view.c.Read(func(int64) {
		for _, it := range items {
			h, ok := it.Obj.(*model.Host)
			if !ok {
				continue
			}
			c := *h
			if al := s.view.allocs.Get(store.AllocKey(h.Name)); al != nil && al.Obj != nil && mine == nil {
				withAllocation(&c, al.Obj.(*model.Allocation))
			}
			hosts = append(hosts, c)
		}
	})
	for i := range hosts {
		h := &hosts[i]
		s.withUsage(h)
		if mine != nil {
			out.Items = append(out.Items, tenantHost(h, mine[h.Name]))
			continue
		}
		out.Items = append(out.Items, *h)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func hostNotFound(err error, name string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("host %q not found", name)
	}
	return err
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	name := r.PathValue("name")
	h, err := s.repo.GetHost(r.Context(), name)
	if err != nil {
		return hostNotFound(err, name)
	}
	s.withUsage(h)
	if !p.clusterAdmin() {
		mine, err := s.projectPlacements(r.Context(), p.tok.Project)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, tenantHost(h, mine[name]))
		return nil
	}
	a, err := s.repo.GetAllocation(r.Context(), name)
	if err != nil {
		return err
	}
	withAllocation(h, a)
	writeJSON(w, http.StatusOK, h)
	return nil
}

// validateHostPatch checks a host patch before anything is read.
func validateHostPatch(req *api.HostPatchRequest) error {
	if req.Labels != nil {
		probe := model.VMSpec{VCPUs: 1, Memory: 16 * model.MiB, Labels: req.Labels}
		if err := probe.Validate(); err != nil {
			var fe *model.FieldError
			if errors.As(err, &fe) {
				return fieldError("labels", "%s", fe.Message)
			}
			return err
		}
	}
	if req.Ratios != nil {
		pol := model.Policy{Ratios: *req.Ratios}
		if err := pol.Validate(); err != nil {
			return err
		}
	}
	if req.State != nil && *req.State != model.HostReady && *req.State != model.HostMaintenance {
		return fieldError("state", "an operator may set ready or maintenance (got %s)", quoteField(string(*req.State)))
	}
	return nil
}

func (s *Server) patchHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	name := r.PathValue("name")
	var req api.HostPatchRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := validateHostPatch(&req); err != nil {
		return err
	}
	alive := false
	if req.State != nil && *req.State == model.HostReady {
		if _, err := s.cfg.Store.Get(r.Context(), store.AliveKey(name)); err == nil {
			alive = true
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	h, err := s.repo.UpdateHostFilters(r.Context(), name, func(h *model.Host) error {
		if req.Labels != nil {
			h.Labels = req.Labels
		}
		if req.Cordoned != nil {
			h.Cordoned = *req.Cordoned
		}
		if req.Ratios != nil {
			h.Ratios = *req.Ratios
		}
		if req.State != nil && *req.State != h.State {
			if *req.State == model.HostReady && !alive {
				return conflict("host %q is not heartbeating; it becomes ready when its agent is back", name)
			}
			h.State = *req.State
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

func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	name := r.PathValue("name")
	// the host's certificate is revoked with it: its next heartbeat is
	// refused and never brings it back
	if err := s.repo.RemoveHost(r.Context(), name); err != nil {
		return hostNotFound(err, name)
	}
	s.trust.forget(name)
	s.hostLimits.forget(name)
	s.leaseMu.Lock()
	delete(s.leases, name)
	s.leaseMu.Unlock()
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// rekeyHost revokes a host's certificate and answers a join token bound
// to that host: the way to give a host a new key (a lost or stolen one,
// an expired certificate, a reinstalled host).
func (s *Server) rekeyHost(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	name := r.PathValue("name")
	var req api.HostRekeyRequest
	if r.ContentLength != 0 {
		if he := decodeJSON(w, r, &req); he != nil {
			return he
		}
	}
	ttl, err := parseTTL("ttl", req.TTL, time.Hour, 7*24*time.Hour)
	if err != nil {
		return err
	}
	res, err := s.RekeyToken(r.Context(), name, ttl)
	if err != nil {
		return hostNotFound(err, name)
	}
	s.trust.forget(name)
	s.log.Info("host re-keyed", "host", name)
	writeJSON(w, http.StatusCreated, res)
	return nil
}

// --- events ---

func (s *Server) events(w http.ResponseWriter, r *http.Request, p *principal) error {
	q := r.URL.Query()
	project := q.Get("project")
	if all, _ := strconv.ParseBool(q.Get("all-projects")); all {
		// as listVMs: every project, admins only
		if !p.clusterAdmin() {
			return forbidden("all-projects needs an admin token")
		}
		project = ""
	} else if !p.clusterAdmin() {
		var err error
		if project, err = s.scope(r, p, false); err != nil {
			return err
		}
	}
	var since int64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fieldError("since", "must be a store revision (a whole number ≥ 0), got %s", quoteField(v))
		}
		since = n
	}
	limit := 1000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			return fieldError("limit", "must be between 1 and 100000, got %s", quoteField(v))
		}
		limit = n
	}
	follow, _ := strconv.ParseBool(q.Get("follow"))
	if follow {
		return s.followEvents(w, r, p, since, project)
	}
	evs, _, err := s.repo.ListEvents(r.Context(), since, project)
	if err != nil {
		return err
	}
	if len(evs) > limit {
		evs = evs[len(evs)-limit:]
	}
	reply(w, http.StatusOK, p, api.EventList{Items: evs})
	return nil
}

// followEvents streams events as NDJSON, one flushed line each.
func (s *Server) followEvents(w http.ResponseWriter, r *http.Request, p *principal, since int64, project string) error {
	ctx, cancel := s.streamContext(r)
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	enc := json.NewEncoder(w)
	admin := p.clusterAdmin()
	// One flush per group of events that came together (a transaction's,
	// or several committed at once), not one per event: a flush is a
	// write to the connection.
	err := s.repo.FollowEventBatches(ctx, since, project, func(e model.Event) error {
		if !admin {
			e.Message = redact(e.Message)
		}
		return enc.Encode(e)
	}, rc.Flush)
	if err != nil && ctx.Err() == nil {
		s.log.Debug("event stream ended", "err", err)
	}
	return nil
}

// countStates computes the state gauges for /metrics.
func (s *Server) countStates(ctx context.Context) (metrics.Counts, error) {
	c := metrics.Counts{HostsByState: map[string]int{}, VMsByPhase: map[string]int{}}
	if err := s.view.c.WaitSynced(ctx); err != nil {
		return c, err
	}
	s.view.c.Read(func(int64) {
		s.view.hosts.Each(store.HostsPrefix, "", func(it *watchcache.Item) bool {
			if h, ok := it.Obj.(*model.Host); ok {
				c.HostsByState[string(h.State)]++
			}
			return true
		})
		s.view.vms.Each(store.VMsPrefix, "", func(it *watchcache.Item) bool {
			if vm := cachedVMOf(it); vm != nil {
				c.VMsByPhase[string(vm.Status.Phase)]++
			}
			return true
		})
	})
	return c, nil
}
