package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// balancerEndpoints are load balancers and scaling groups (issue 16,
// second half; docs/loadbalancing.md).
func (s *Server) balancerEndpoints() []endpoint {
	scoped := []string{"project"}
	return []endpoint{
		{method: "GET", path: "/api/v1/lbs", handle: scopedList(s, (*state.Repo).ListLBs, func(l []model.LoadBalancer) api.LBList { return api.LBList{LoadBalancers: l} }), resp: api.LBList{}, status: 200, query: scoped},
		{method: "POST", path: "/api/v1/lbs", handle: s.createLB, req: api.LBCreateRequest{}, resp: model.LoadBalancer{}, status: 201, query: scoped},
		{method: "GET", path: "/api/v1/lbs/{name}", handle: scopedGet(s, (*state.Repo).GetLB, lbNotFound), resp: model.LoadBalancer{}, status: 200, query: scoped},
		{method: "PATCH", path: "/api/v1/lbs/{name}", handle: s.patchLB, req: api.LBPatchRequest{}, resp: model.LoadBalancer{}, status: 200, query: scoped},
		{method: "DELETE", path: "/api/v1/lbs/{name}", handle: s.deleteLB, resp: model.LoadBalancer{}, status: 202, query: scoped},
		{method: "GET", path: "/api/v1/groups", handle: scopedList(s, (*state.Repo).ListGroups, func(l []model.ScalingGroup) api.GroupList { return api.GroupList{Groups: l} }), resp: api.GroupList{}, status: 200, query: scoped},
		{method: "POST", path: "/api/v1/groups", handle: s.createGroup, req: api.GroupCreateRequest{}, resp: model.ScalingGroup{}, status: 201, query: scoped},
		{method: "GET", path: "/api/v1/groups/{name}", handle: scopedGet(s, (*state.Repo).GetGroup, groupNotFound), resp: model.ScalingGroup{}, status: 200, query: scoped},
		{method: "PATCH", path: "/api/v1/groups/{name}", handle: s.patchGroup, req: api.GroupPatchRequest{}, resp: model.ScalingGroup{}, status: 200, query: scoped},
		{method: "DELETE", path: "/api/v1/groups/{name}", handle: s.deleteGroup, resp: model.ScalingGroup{}, status: 202, query: scoped},
	}
}

// lbNotFound maps a missing load balancer to its 404.
var lbNotFound = missing("load balancer")

// checkLBRefs checks what a balancer spec names in its project: the
// network, the member VMs (each with a NIC on that network) and the
// group.
func (s *Server) checkLBRefs(ctx context.Context, project string, spec *model.LBSpec) error {
	if _, err := s.repo.GetNetwork(ctx, project, spec.Network); errors.Is(err, store.ErrNotFound) {
		return fieldError("spec.network", "network %q does not exist in project %s (vpool network list)", spec.Network, project)
	} else if err != nil {
		return err
	}
	for i, name := range spec.Members.VMs {
		f := fmt.Sprintf("spec.members.vms[%d]", i)
		vm, err := s.repo.GetVM(ctx, project, name)
		if errors.Is(err, store.ErrNotFound) {
			return fieldError(f, "VM %q does not exist in project %s: members are VMs of the balancer's project", name, project)
		}
		if err != nil {
			return err
		}
		if nicOn(vm, spec.Network) == "" {
			return fieldError(f, "VM %s has no NIC on network %s: add one (vpool vm nic add %s %s)", name, spec.Network, name, spec.Network)
		}
	}
	if g := spec.Members.Group; g != "" {
		if _, err := s.repo.GetGroup(ctx, project, g); errors.Is(err, store.ErrNotFound) {
			return fieldError("spec.members.group", "scaling group %q does not exist in project %s", g, project)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// nicOn returns the address of vm's NIC on network, or "".
func nicOn(vm *model.VM, network string) string {
	for _, n := range vm.Spec.NICs {
		if n.Network == network && n.IP != "" {
			return n.IP
		}
	}
	return ""
}

func (s *Server) createLB(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.LBCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("name", req.Name); err != nil {
		return err
	}
	if err := req.Spec.Validate(); err != nil {
		return err
	}
	if _, err := s.repo.GetProject(r.Context(), project); err != nil {
		return projectErr(err, project)
	}
	if err := s.checkLBRefs(r.Context(), project, &req.Spec); err != nil {
		return err
	}
	b, err := s.repo.CreateLB(r.Context(), &model.LoadBalancer{Meta: model.Meta{Name: req.Name, Project: project}, Spec: req.Spec}, randomMAC())
	if err != nil {
		field := "spec.network"
		if req.Spec.IP != "" {
			field = "spec.ip"
		}
		return projectErr(netErr(err, field), project)
	}
	reply(w, http.StatusCreated, p, b)
	return nil
}

func (s *Server) patchLB(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.LBPatchRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	name := r.PathValue("name")
	cur, err := s.repo.GetLB(r.Context(), project, name)
	if err != nil {
		return lbNotFound(err, project, name)
	}
	spec := cur.Spec
	if req.Members != nil {
		spec.Members = *req.Members
	}
	if req.Algorithm != nil {
		spec.Algorithm = *req.Algorithm
	}
	if req.HealthCheck != nil {
		spec.HealthCheck = *req.HealthCheck
	}
	if req.DrainTimeout != nil {
		spec.DrainTimeout = *req.DrainTimeout
		if spec.DrainTimeout == 0 {
			return fieldError("drainTimeoutSeconds", "0 is out of range: use 1 to %d", model.MaxDrainTimeout)
		}
	}
	if err := spec.Validate(); err != nil {
		var fe *model.FieldError
		if errors.As(err, &fe) {
			return fieldError(strings.TrimPrefix(fe.Field, "spec."), "%s", fe.Message)
		}
		return err
	}
	if err := s.checkLBRefs(r.Context(), project, &spec); err != nil {
		var he *httpError
		if errors.As(err, &he) {
			he.body.Field = strings.TrimPrefix(he.body.Field, "spec.")
		}
		return err
	}
	b, err := s.repo.UpdateLB(r.Context(), project, name, func(b *model.LoadBalancer) ([]model.Event, error) {
		if b.DeletedAt != nil {
			return nil, conflict("load balancer %s is being deleted", name)
		}
		b.Spec = spec
		return []model.Event{{Kind: "lb.changed", Message: fmt.Sprintf("load balancer %s changed: members %s, %s", name, membersText(spec.Members), spec.Algorithm)}}, nil
	})
	if err != nil {
		return lbNotFound(err, project, name)
	}
	reply(w, http.StatusOK, p, b)
	return nil
}

func membersText(m model.LBMembers) string {
	var parts []string
	if len(m.VMs) > 0 {
		parts = append(parts, strings.Join(m.VMs, ","))
	}
	if m.Group != "" {
		parts = append(parts, "group "+m.Group)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " and ")
}

func (s *Server) deleteLB(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	gs, err := s.repo.ListGroups(r.Context(), project)
	if err != nil {
		return err
	}
	for _, g := range gs {
		if g.Spec.LB == name && g.DeletedAt == nil {
			return errf(http.StatusConflict, api.CodeConflict, "", "load balancer %s is used by scaling group %s: delete the group first", name, g.Name)
		}
	}
	now := s.now()
	b, err := s.repo.UpdateLB(r.Context(), project, name, func(b *model.LoadBalancer) ([]model.Event, error) {
		if b.DeletedAt != nil {
			return nil, state.ErrSkip
		}
		b.DeletedAt, b.Status.Phase = &now, model.LBDeleting
		return []model.Event{{Kind: "lb.deleting", Message: "load balancer " + name + " is being deleted"}}, nil
	})
	if err != nil {
		return lbNotFound(err, project, name)
	}
	reply(w, http.StatusAccepted, p, b)
	return nil
}

// forTenantLB redacts what a balancer's host reported (HAProxy's error
// text may hold host paths and command lines).
func forTenantLB(v any) any {
	one := func(b *model.LoadBalancer) {
		if o := b.Status.Observed; o != nil {
			c := *o
			c.Error = redact(c.Error)
			b.Status.Observed = &c
		}
	}
	switch t := v.(type) {
	case *model.LoadBalancer:
		c := *t
		one(&c)
		return &c
	case api.LBList:
		out := api.LBList{LoadBalancers: make([]model.LoadBalancer, len(t.LoadBalancers))}
		for i, b := range t.LoadBalancers {
			one(&b)
			out.LoadBalancers[i] = b
		}
		return out
	}
	return v
}
