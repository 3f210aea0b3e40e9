package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/metering"
	"github.com/vpool/vpool/internal/metering/meterstore"
	"github.com/vpool/vpool/internal/metrics"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Metering's read side (docs/metering.md): the leader books usage into
// monthly rollups in the store (meterstore); any server answers reports
// from them. A tenant sees its own project's.

func (s *Server) usageEndpoints() []endpoint {
	return []endpoint{
		{method: "GET", path: "/api/v1/usage", handle: s.usageReport, resp: api.UsageReport{}, status: 200,
			query: []string{"project", "all-projects", "from", "to", "vms"}},
		{method: "GET", path: "/api/v1/cluster/metering", handle: s.getMetering, resp: model.MeteringSettings{}, status: 200},
		{method: "PATCH", path: "/api/v1/cluster/metering", handle: s.patchMetering, req: api.MeteringSettingsPatch{}, resp: model.MeteringSettings{}, status: 200},
	}
}

// parseDay reads a time as RFC 3339 or a day (YYYY-MM-DD, UTC).
func parseDay(field, v string, def time.Time) (time.Time, error) {
	if v == "" {
		return def, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	return time.Time{}, fieldError(field, "%s is not a time: write 2025-03-01 or 2025-03-01T00:00:00Z", quoteField(v))
}

func (s *Server) usageReport(w http.ResponseWriter, r *http.Request, p *principal) error {
	q := r.URL.Query()
	project := ""
	if all, _ := strconv.ParseBool(q.Get("all-projects")); !all || !p.clusterAdmin() || q.Get("project") != "" {
		var err error
		if project, err = s.scope(r, p, false); err != nil {
			return err
		}
	}
	now := s.now().UTC()
	from, err := parseDay("from", q.Get("from"), time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		return err
	}
	to, err := parseDay("to", q.Get("to"), now)
	if err != nil {
		return err
	}
	if !to.After(from) {
		return fieldError("to", "must be after from (%s)", from.Format(time.RFC3339))
	}
	withVMs, _ := strconv.ParseBool(q.Get("vms"))
	rs, err := meterstore.Range(r.Context(), s.cfg.Store, from, to, project)
	if err != nil {
		return err
	}
	rs = s.withPending(rs, metering.Month(from), metering.Month(to), project)
	lines, monthly := metering.Report(rs, from, to)
	view := usageView(lines, from, to, monthly, withVMs)
	if month := metering.Month(now); metering.Month(to) >= month {
		if at := meterstore.BookedThrough(rs, month); !at.IsZero() {
			view.BookedThrough = &at
		}
	}
	reply(w, http.StatusOK, p, view)
	return nil
}

// withPending adds what this server's metering task (on the leader)
// booked and has not written yet to the stored rollups rs of months
// first..last.
func (s *Server) withPending(rs []model.UsageRollup, first, last, project string) []model.UsageRollup {
	pending, _, ok := s.cfg.MeterLive.Pending(first, last, project, s.now())
	if !ok {
		return rs
	}
	return meterstore.Merge(rs, pending)
}

// usageView groups report lines by project.
func usageView(lines []metering.Line, from, to time.Time, monthly, withVMs bool) api.UsageReport {
	out := api.UsageReport{From: from, To: to, Monthly: monthly, Projects: []api.ProjectUsage{}}
	for _, l := range lines {
		if n := len(out.Projects); n == 0 || out.Projects[n-1].Project != l.Project {
			out.Projects = append(out.Projects, api.ProjectUsage{Project: l.Project})
		}
		pu := &out.Projects[len(out.Projects)-1]
		pu.Total = pu.Total.Add(l.UsageFigures)
		out.Total = out.Total.Add(l.UsageFigures)
		if withVMs {
			pu.VMs = append(pu.VMs, api.VMUsageLine{VM: l.VM, Deleted: l.Deleted, UsageFigures: l.UsageFigures})
		}
	}
	return out
}

// usageMetrics reads this month's rollups for /metrics.
func (s *Server) usageMetrics(ctx context.Context) ([]metrics.UsageLine, error) {
	month := metering.Month(s.now())
	rs, err := meterstore.List(ctx, s.cfg.Store, month, "")
	if err != nil {
		return nil, err
	}
	rs = s.withPending(rs, month, month, "")
	out := make([]metrics.UsageLine, 0, len(rs))
	for _, r := range rs {
		t := r.Total
		out = append(out, metrics.UsageLine{Project: r.Project, VM: r.VM, Host: r.Host, VCPUHours: t.VCPUHours, MemGiBHours: t.MemGiBHours,
			DiskGiBHours: t.DiskGiBHours, NetBytes: t.NetBytes, EnergyKWh: t.EnergyKWh, CO2Grams: t.CO2Grams})
	}
	return out, nil
}

func (s *Server) getMetering(w http.ResponseWriter, r *http.Request, _ *principal) error {
	ms, _, err := meterstore.ReadSettings(r.Context(), s.cfg.Store)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ms)
	return nil
}

// patchMetering sets or removes sites' grid intensities (admins).
func (s *Server) patchMetering(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	var req api.MeteringSettingsPatch
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	for attempt := 0; attempt < 8; attempt++ {
		ms, rev, err := meterstore.ReadSettings(r.Context(), s.cfg.Store)
		if err != nil {
			return err
		}
		merged := make(map[string]float64, len(ms.Sites)+len(req.Sites))
		for k, v := range ms.Sites {
			merged[k] = v
		}
		for k, v := range req.Sites {
			if v < 0 {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		ms.Sites = merged
		if err := ms.Validate(); err != nil {
			return err
		}
		b, _ := json.Marshal(ms)
		ok, _, err := s.cfg.Store.Txn(r.Context(), []store.Cond{store.IfRev(store.MeteringSettingsKey, rev)}, []store.Op{store.Put(store.MeteringSettingsKey, b)})
		if err != nil {
			return err
		}
		if ok {
			writeJSON(w, http.StatusOK, ms)
			return nil
		}
	}
	return conflict("the metering settings keep changing; try again")
}
