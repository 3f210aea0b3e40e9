package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// networkEndpoints are networks, their address pools and security
// groups (issue 16).
func (s *Server) networkEndpoints() []endpoint {
	scoped := []string{"project"}
	return []endpoint{
		{method: "GET", path: "/api/v1/networks", handle: scopedList(s, (*state.Repo).ListNetworks, func(l []model.Network) api.NetworkList { return api.NetworkList{Networks: l} }), resp: api.NetworkList{}, status: 200, query: scoped},
		{method: "POST", path: "/api/v1/networks", handle: s.createNetwork, req: api.NetworkCreateRequest{}, resp: model.Network{}, status: 201, query: scoped},
		{method: "GET", path: "/api/v1/networks/{name}", handle: scopedGet(s, (*state.Repo).GetNetwork, networkNotFound), resp: model.Network{}, status: 200, query: scoped},
		{method: "DELETE", path: "/api/v1/networks/{name}", handle: s.deleteNetwork, status: 204, query: scoped},
		{method: "GET", path: "/api/v1/networks/{name}/addresses", handle: s.listAddresses, resp: api.AddressList{}, status: 200, query: scoped},
		{method: "POST", path: "/api/v1/networks/{name}/addresses", handle: s.allocateAddress, req: api.AddressRequest{}, resp: model.AddressAlloc{}, status: 201, query: scoped},
		{method: "DELETE", path: "/api/v1/networks/{name}/addresses/{ip}", handle: s.releaseAddress, status: 204, query: []string{"project", "owner"}},
		{method: "GET", path: "/api/v1/secgroups", handle: scopedList(s, (*state.Repo).ListSecurityGroups, func(l []model.SecurityGroup) api.SecurityGroupList { return api.SecurityGroupList{SecurityGroups: l} }), resp: api.SecurityGroupList{}, status: 200, query: scoped},
		{method: "POST", path: "/api/v1/secgroups", handle: s.createSecGroup, req: api.SecurityGroupCreateRequest{}, resp: model.SecurityGroup{}, status: 201, query: scoped},
		{method: "GET", path: "/api/v1/secgroups/{name}", handle: scopedGet(s, (*state.Repo).GetSecurityGroup, secGroupNotFound), resp: model.SecurityGroup{}, status: 200, query: scoped},
		{method: "DELETE", path: "/api/v1/secgroups/{name}", handle: s.deleteSecGroup, status: 204, query: scoped},
		{method: "POST", path: "/api/v1/secgroups/{name}/rules", handle: s.addRule, req: model.Rule{}, resp: model.SecurityGroup{}, status: 201, query: scoped},
		{method: "DELETE", path: "/api/v1/secgroups/{name}/rules/{id}", handle: s.deleteRule, resp: model.SecurityGroup{}, status: 200, query: scoped},
		{method: "POST", path: "/api/v1/vms/{name}/nics", handle: s.addNIC, req: model.NIC{}, resp: model.VM{}, status: 202, query: scoped},
		{method: "PATCH", path: "/api/v1/vms/{name}/nics/{nic}", handle: s.patchNIC, req: api.NICPatchRequest{}, resp: model.VM{}, status: 202, query: scoped},
		{method: "DELETE", path: "/api/v1/vms/{name}/nics/{nic}", handle: s.removeNIC, resp: model.VM{}, status: 202, query: scoped},
	}
}

// netErr maps the network layer's errors: in use and taken are 409,
// a full pool is 409 naming the field.
func netErr(err error, field string) error {
	var fe *model.FieldError
	switch {
	case errors.As(err, &fe) && field != "" && (fe.Field == "ip" || fe.Field == "spec.subnet"):
		if fe.Field == "ip" {
			return fieldError(field, "%s", fe.Message)
		}
		return err
	case errors.Is(err, state.ErrInUse), errors.Is(err, state.ErrAddressTaken):
		return errf(http.StatusConflict, api.CodeConflict, field, "%s", strings.TrimPrefix(err.Error(), "state: "))
	case errors.Is(err, state.ErrPoolFull):
		return errf(http.StatusConflict, api.CodeConflict, field, "%s: delete an address or use a larger network", strings.TrimPrefix(err.Error(), "state: "))
	}
	return err
}

// networkNotFound maps a missing network to its 404.
var networkNotFound = missing("network")

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.NetworkCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("name", req.Name); err != nil {
		return err
	}
	if err := req.Spec.Validate(); err != nil {
		return err
	}
	n, err := s.repo.CreateNetwork(r.Context(), &model.Network{Meta: model.Meta{Name: req.Name, Project: project}, Spec: req.Spec})
	if err != nil {
		return projectErr(netErr(err, ""), project)
	}
	writeJSON(w, http.StatusCreated, n)
	return nil
}

func (s *Server) deleteNetwork(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := s.repo.DeleteNetwork(r.Context(), project, name); err != nil {
		return networkNotFound(netErr(err, ""), project, name)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listAddresses(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if _, err := s.repo.GetNetwork(r.Context(), project, name); err != nil {
		return networkNotFound(err, project, name)
	}
	as, err := s.repo.ListAddresses(r.Context(), project, name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.AddressList{Addresses: as})
	return nil
}

// validOwner checks an address API owner: "<kind>/<name>", two DNS
// labels; "vm/..." is the NICs' own and refused here.
func validOwner(owner string) error {
	kind, name, ok := strings.Cut(owner, "/")
	if !ok || model.ValidName("owner", kind) != nil || model.ValidName("owner", name) != nil {
		return fieldError("owner", "%q is not an owner: write KIND/NAME, e.g. lb/web", truncateStr(owner, 80))
	}
	if kind == "vm" {
		return fieldError("owner", "vm/... addresses belong to VM NICs: add a NIC to the VM instead")
	}
	return nil
}

func truncateStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (s *Server) allocateAddress(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.AddressRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := validOwner(req.Owner); err != nil {
		return err
	}
	name := r.PathValue("name")
	a, err := s.repo.AllocateAddress(r.Context(), project, name, req.Owner, "", req.IP)
	if err != nil {
		return networkNotFound(netErr(err, "ip"), project, name)
	}
	writeJSON(w, http.StatusCreated, a)
	return nil
}

func (s *Server) releaseAddress(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	name, ip, owner := r.PathValue("name"), r.PathValue("ip"), r.URL.Query().Get("owner")
	if owner != "" {
		if err := validOwner(owner); err != nil {
			return err
		}
	}
	if _, err := s.repo.GetNetwork(r.Context(), project, name); err != nil {
		return networkNotFound(err, project, name)
	}
	as, err := s.repo.ListAddresses(r.Context(), project, name)
	if err != nil {
		return err
	}
	for _, a := range as {
		if a.IP != ip {
			continue
		}
		if strings.HasPrefix(a.Owner, "vm/") {
			return errf(http.StatusConflict, api.CodeConflict, "ip", "%s belongs to %s: remove the NIC instead", ip, a.Owner)
		}
		if err := s.repo.ReleaseAddress(r.Context(), project, name, ip, owner); err != nil {
			return netErr(err, "owner")
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return notFound("address %s is not allocated on network %s", truncateStr(ip, 40), name)
}

// secGroupNotFound maps a missing security group to its 404.
var secGroupNotFound = missing("security group")

// checkPeers refuses rules naming a group the project does not have
// (a group of another project cannot be named: names are per project).
func (s *Server) checkPeers(r *http.Request, project, self string, rules []model.Rule, prefix string) error {
	for i, rule := range rules {
		if rule.Group == "" || rule.Group == self {
			continue
		}
		if _, err := s.repo.GetSecurityGroup(r.Context(), project, rule.Group); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fieldError(fmt.Sprintf("%s[%d].group", prefix, i), "security group %q does not exist in project %s: a rule's peer group must be of the same project", rule.Group, project)
			}
			return err
		}
	}
	return nil
}

func (s *Server) createSecGroup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.SecurityGroupCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("name", req.Name); err != nil {
		return err
	}
	spec := model.SecurityGroupSpec{Description: req.Description, Rules: req.Rules}
	if len(spec.Rules) == 0 && !req.NoDefaultEgress {
		spec.Rules = []model.Rule{{Direction: model.DirEgress, Protocol: model.ProtoAny}}
	}
	if err := spec.Validate(); err != nil {
		var fe *model.FieldError
		if errors.As(err, &fe) {
			return fieldError(strings.Replace(fe.Field, "spec.", "", 1), "%s", fe.Message)
		}
		return err
	}
	if err := s.checkPeers(r, project, req.Name, spec.Rules, "rules"); err != nil {
		return err
	}
	g, err := s.repo.CreateSecurityGroup(r.Context(), &model.SecurityGroup{Meta: model.Meta{Name: req.Name, Project: project}, Spec: spec})
	if err != nil {
		return projectErr(err, project)
	}
	writeJSON(w, http.StatusCreated, g)
	return nil
}

func (s *Server) deleteSecGroup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if err := s.repo.DeleteSecurityGroup(r.Context(), project, name); err != nil {
		return secGroupNotFound(netErr(err, ""), project, name)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) addRule(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var rule model.Rule
	if he := decodeJSON(w, r, &rule); he != nil {
		return he
	}
	rule.ID = ""
	if err := rule.Validate("rule"); err != nil {
		var fe *model.FieldError
		errors.As(err, &fe)
		return fieldError(strings.TrimPrefix(fe.Field, "rule."), "%s", fe.Message)
	}
	name := r.PathValue("name")
	if err := s.checkPeers(r, project, name, []model.Rule{rule}, "rules"); err != nil {
		var he *httpError
		if errors.As(err, &he) {
			he.body.Field = "group"
		}
		return err
	}
	g, _, err := s.repo.AddRule(r.Context(), project, name, rule)
	if err != nil {
		return secGroupNotFound(err, project, name)
	}
	writeJSON(w, http.StatusCreated, g)
	return nil
}

func (s *Server) deleteRule(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	name, id := r.PathValue("name"), r.PathValue("id")
	g, err := s.repo.DeleteRule(r.Context(), project, name, id)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("security group %q has no rule %q in project %s", name, truncateStr(id, 40), project)
		}
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}
