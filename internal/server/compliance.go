package server

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/auditlog"
	"github.com/vpool/vpool/internal/model"
)

// The data-locality compliance report (docs/audit.md): the VMs, their
// constraints (required labels) and the hosts they ran on, from the
// decision records of the audit trail the store holds, with breaches.

func (s *Server) complianceEndpoints() []endpoint {
	return []endpoint{
		{method: "GET", path: "/api/v1/compliance", handle: s.complianceReport, resp: api.ComplianceReport{}, status: 200,
			query: []string{"project", "all-projects", "breaches"}},
	}
}

func (s *Server) complianceReport(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	project := ""
	if all, _ := strconv.ParseBool(r.URL.Query().Get("all-projects")); !all || !p.clusterAdmin() || r.URL.Query().Get("project") != "" {
		var err error
		if project, err = s.scope(r, p, false); err != nil {
			return err
		}
	}
	vms, _, err := s.repo.ListVMs(ctx, project)
	if err != nil {
		return err
	}
	hostList, _, err := s.repo.ListHosts(ctx)
	if err != nil {
		return err
	}
	hosts := make(map[string]*model.Host, len(hostList))
	for _, h := range hostList {
		hosts[h.Name] = h
	}
	head, _, err := auditlog.ReadHead(ctx, s.cfg.Store)
	if err != nil {
		return err
	}
	raws, err := auditlog.Range(ctx, s.cfg.Store, 1, head.Seq, 0)
	if err != nil {
		return err
	}
	out := api.ComplianceReport{VMs: []model.ComplianceVM{}}
	var recs []model.AuditRecord
	for i, raw := range raws {
		var rec model.AuditRecord
		if err := json.Unmarshal(raw.Bytes, &rec); err != nil {
			continue // verify names it; the report reads what it can
		}
		if i == 0 {
			out.FirstRecord, out.Since = rec.Seq, rec.Time
		}
		if rec.Kind == model.AuditKindDecision && (project == "" || rec.Project == project) {
			recs = append(recs, rec)
		}
	}
	onlyBreaches, _ := strconv.ParseBool(r.URL.Query().Get("breaches"))
	for _, c := range audit.Compliance(vms, hosts, recs) {
		if c.Breach {
			out.Breaches++
		}
		if c.Breach || !onlyBreaches {
			out.VMs = append(out.VMs, c)
		}
	}
	reply(w, http.StatusOK, p, out)
	return nil
}
