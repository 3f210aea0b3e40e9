package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// Token scopes (model/scope.go) narrow a token's role. wrap() asks
// checkScopes before the handler of every route a scoped token calls:
// the route must be one a scope allows, and a group scope confines VM
// routes to the VMs of its group (others answer 404, as for a project
// the token cannot see).

// routeClass is what a scope looks at in a route.
type routeClass struct {
	read, vm, power, console bool
	named                    bool // a route of one VM (/vms/{name}...)
	list, create, patch      bool
}

func classify(route string) routeClass {
	method, path, _ := strings.Cut(route, " ")
	c := routeClass{read: method == http.MethodGet || method == http.MethodHead}
	c.vm = path == "/api/v1/vms" || path == "/api/v1/vms:batch" || strings.HasPrefix(path, "/api/v1/vms/")
	c.console = strings.HasSuffix(path, "/console")
	c.named = strings.HasPrefix(path, "/api/v1/vms/{name}")
	c.power = method == http.MethodPost && c.named &&
		(strings.HasSuffix(path, "/start") || strings.HasSuffix(path, "/stop") || strings.HasSuffix(path, "/restart"))
	c.list = route == "GET /api/v1/vms"
	c.create = method == http.MethodPost && (path == "/api/v1/vms" || path == "/api/v1/vms:batch")
	c.patch = route == "PATCH /api/v1/vms/{name}"
	return c
}

// scopeAllows reports whether one of scopes allows a route of class c.
func scopeAllows(scopes []string, c routeClass) bool {
	for _, sc := range scopes {
		switch sc {
		case model.ScopeRead:
			if c.read && !c.console {
				return true
			}
		case model.ScopeVMsRead:
			if c.vm && c.read && !c.console {
				return true
			}
		case model.ScopeVMsPower:
			if c.vm && ((c.read && !c.console) || c.power) {
				return true
			}
		case model.ScopeVMsWrite:
			if c.vm {
				return true
			}
		}
	}
	return false
}

// checkScopes refuses what p's scopes do not allow; for a group-scoped
// token's VM list it answers itself (the group's VMs only).
func (s *Server) checkScopes(w http.ResponseWriter, r *http.Request, route string, p *principal) error {
	c := classify(route)
	if !scopeAllows(p.tok.Scopes, c) {
		return forbidden("this token's scopes (%s) do not allow %s", strings.Join(p.tok.Scopes, ", "), route)
	}
	group := model.ScopeGroup(p.tok.Scopes)
	if group == "" || !c.vm {
		return nil
	}
	switch {
	case c.create:
		return forbidden("a token scoped to group %s cannot create VMs", group)
	case c.list:
		return s.listGroupVMs(w, r, p, group)
	case c.patch:
		if he := s.patchKeepsGroup(r); he != nil {
			return he
		}
	}
	if c.named {
		project, err := s.scope(r, p, false)
		if err != nil {
			return err
		}
		vm, err := s.repo.GetVM(r.Context(), project, r.PathValue("name"))
		if errors.Is(err, state.ErrNotFound) {
			return nil // the handler answers 404
		}
		if err != nil {
			return err
		}
		if vm.Spec.Labels[model.GroupLabel] != group {
			return notFound("VM %q not found", vm.Name)
		}
	}
	return nil
}

// errAnswered says checkScopes wrote the answer itself.
var errAnswered = errors.New("server: answered by the scope check")

// listGroupVMs answers GET /vms for a group-scoped token.
func (s *Server) listGroupVMs(w http.ResponseWriter, r *http.Request, p *principal, group string) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	vms, rev, err := s.repo.ListVMs(r.Context(), project)
	if err != nil {
		return err
	}
	out := api.VMList{Items: []model.VM{}, Revision: rev}
	for _, vm := range vms {
		if vm.Spec.Labels[model.GroupLabel] == group {
			out.Items = append(out.Items, *vm)
		}
	}
	for i := range out.Items {
		tenantVM(&out.Items[i])
	}
	writeJSON(w, http.StatusOK, withoutUserData(out))
	return errAnswered
}

// patchKeepsGroup refuses a patch that changes labels: a group-scoped
// token could move a VM out of (or into) its group.
func (s *Server) patchKeepsGroup(r *http.Request) *httpError {
	body, err := peekBody(r)
	if err != nil {
		return nil // the handler refuses it
	}
	var v map[string]json.RawMessage
	if json.Unmarshal(body, &v) == nil {
		if _, ok := v["labels"]; ok {
			return forbidden("a token scoped to a group cannot change labels")
		}
	}
	return nil
}

// peekBody reads r's body (at most MaxBody+1 bytes) and puts it back, so
// that the handler reads it as sent.
func peekBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), r.Body))
	return b, err
}
