package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

func (s *Server) projectView(ctx context.Context, p *model.Project) (api.ProjectView, error) {
	u, _, err := s.repo.GetUsage(ctx, p.Name)
	return api.ProjectView{Project: *p, Usage: u}, err
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request, p *principal) error {
	ps, err := s.repo.ListProjects(r.Context())
	if err != nil {
		return err
	}
	usage, err := s.repo.ListUsage(r.Context())
	if err != nil {
		return err
	}
	out := api.ProjectList{Items: []api.ProjectView{}}
	for _, pr := range ps {
		if seesProject(p, pr.Name) {
			out.Items = append(out.Items, api.ProjectView{Project: *pr, Usage: usage[pr.Name]})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	var req api.ProjectCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	pr := &model.Project{Meta: model.Meta{Name: req.Name}, Description: req.Description, Quota: req.Quota}
	if err := pr.Validate(); err != nil {
		return err
	}
	created, err := s.repo.CreateProject(r.Context(), pr)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.ProjectView{Project: *created})
	return nil
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request, p *principal) error {
	name := r.PathValue("name")
	if !seesProject(p, name) {
		return notFound("project %q not found", name)
	}
	pr, err := s.repo.GetProject(r.Context(), name)
	return s.answerProject(w, r, name, pr, err)
}

// answerProject answers a project read or update: 404 when it is gone,
// else the project with its usage.
func (s *Server) answerProject(w http.ResponseWriter, r *http.Request, name string, pr *model.Project, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("project %q not found", name)
	}
	if err != nil {
		return err
	}
	v, err := s.projectView(r.Context(), pr)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) patchProject(w http.ResponseWriter, r *http.Request, p *principal) error {
	name := r.PathValue("name")
	if !seesProject(p, name) {
		return notFound("project %q not found", name)
	}
	if err := requireAdmin(p); err != nil {
		return err
	}
	var req api.ProjectPatchRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if req.Quota != nil {
		if err := req.Quota.Validate(); err != nil {
			return err
		}
	}
	if req.Description != nil {
		if err := model.ValidDescription("description", *req.Description); err != nil {
			return err
		}
	}
	pr, err := s.repo.UpdateProject(r.Context(), name, func(pr *model.Project) error {
		if req.Description != nil {
			pr.Description = *req.Description
		}
		if req.Quota != nil {
			pr.Quota = *req.Quota
		}
		return nil
	})
	return s.answerProject(w, r, name, pr, err)
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request, p *principal) error {
	name := r.PathValue("name")
	if !seesProject(p, name) {
		return notFound("project %q not found", name)
	}
	if err := requireAdmin(p); err != nil {
		return err
	}
	if name == api.DefaultProject {
		return conflict("the default project cannot be deleted")
	}
	err := s.repo.DeleteProject(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("project %q not found", name)
	}
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- tokens ---

func publicToken(t *model.Token) model.Token {
	c := *t
	c.Hash = ""
	return c
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	toks, err := s.repo.ListTokens(r.Context())
	if err != nil {
		return err
	}
	out := api.TokenList{Items: make([]model.Token, 0, len(toks))}
	for _, t := range toks {
		out.Items = append(out.Items, publicToken(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseTTL reads a duration for field; "" gives def.
func parseTTL(field, s string, def, maxd time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fieldError(field, "%s is not a duration: use e.g. 30m, 24h or 720h", quoteField(s))
	}
	if d <= 0 || d > maxd {
		return 0, fieldError(field, "must be positive and at most %s (got %s)", maxd, quoteField(s))
	}
	return d, nil
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	var req api.TokenCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if req.Role == "" {
		req.Role = model.RoleMember
	}
	switch req.Role {
	case model.RoleAdmin, model.RoleMember, model.RoleViewer:
	case model.RoleMetrics:
		if req.Project != "" {
			return fieldError("project", "a metrics token reads the cluster's /metrics: leave project out")
		}
	default:
		return fieldError("role", "must be admin, member, viewer or metrics (got %s)", quoteField(string(req.Role)))
	}
	if req.Role != model.RoleAdmin && req.Role != model.RoleMetrics && req.Project == "" {
		return fieldError("project", "a %s token needs a project", req.Role)
	}
	if req.Project != "" {
		if err := model.ValidName("project", req.Project); err != nil {
			return err
		}
		if _, err := s.repo.GetProject(r.Context(), req.Project); errors.Is(err, store.ErrNotFound) {
			return fieldError("project", "project %q does not exist", req.Project)
		} else if err != nil {
			return err
		}
	}
	ttl, err := parseTTL("ttl", req.TTL, 0, 10*365*24*time.Hour)
	if err != nil {
		return err
	}
	if err := model.ValidScopes(req.Scopes); err != nil {
		return err
	}
	secret := newSecret("vpt_")
	tok := &model.Token{ID: state.NewID()[:12], Hash: state.HashSecret(secret), Project: req.Project, Role: req.Role, CreatedAt: s.now(),
		Scopes: req.Scopes}
	if ttl > 0 {
		tok.ExpiresAt = s.now().Add(ttl)
	}
	if err := s.repo.CreateToken(r.Context(), tok); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, api.TokenCreateResponse{Token: publicToken(tok), Secret: secret})
	return nil
}

func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	id := r.PathValue("id")
	rev, err := s.repo.DeleteToken(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("token %q not found", id)
	} else if err != nil {
		return err
	}
	// read-your-writes: the view that authenticates drops the token
	// before the revocation is acknowledged
	ctx, cancel := context.WithTimeout(r.Context(), cacheWait)
	defer cancel()
	if err := s.view.c.WaitRev(ctx, rev); err != nil {
		return fmt.Errorf("server: the revocation is stored but this server's cache lags: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- cluster ---

func (s *Server) openAPI(w http.ResponseWriter, _ *http.Request, _ *principal) error {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(api.OpenAPI)
	return nil
}

// clusterInfo answers the cluster summary; a tenant's counts are its
// project's (VMs, one project) and it is not told the leader's address.
func (s *Server) clusterInfo(w http.ResponseWriter, r *http.Request, p *principal) error {
	ctx := r.Context()
	hosts, _, err := s.cfg.Store.List(ctx, store.HostsPrefix)
	if err != nil {
		return err
	}
	usage, err := s.repo.ListUsage(ctx)
	if err != nil {
		return err
	}
	vms := 0
	for _, u := range usage {
		vms += u.VMs
	}
	info := api.ClusterInfo{Version: s.cfg.Version, Server: s.Addr(), Store: s.cfg.StoreKind, CAHash: s.ca.Hash(),
		Hosts: len(hosts), VMs: vms, Projects: len(usage)}
	if !p.clusterAdmin() {
		u, ok := usage[p.tok.Project]
		info.VMs, info.Projects = u.VMs, 0
		if ok {
			info.Projects = 1
		}
	} else if kv, err := s.cfg.Store.Get(ctx, store.LeaderKey); err == nil {
		info.Leader = string(kv.Value)
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, _ *principal) error {
	pol, _, err := s.repo.GetPolicy(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pol)
	return nil
}

func (s *Server) putPolicy(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	var pol model.Policy
	if he := decodeJSON(w, r, &pol); he != nil {
		return he
	}
	if err := pol.Validate(); err != nil {
		return err
	}
	if _, err := s.repo.PutPolicy(r.Context(), pol); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, pol)
	return nil
}

// --- join tokens ---

func (s *Server) createJoinToken(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	var req api.JoinTokenRequest
	if he := decodeOptionalJSON(w, r, &req); he != nil {
		return he
	}
	ttl, err := parseTTL("ttl", req.TTL, time.Hour, 7*24*time.Hour)
	if err != nil {
		return err
	}
	res, err := s.NewJoinToken(r.Context(), ttl, req.Uses)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, res)
	return nil
}
