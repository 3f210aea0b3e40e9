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

// groupNotFound maps a missing scaling group to its 404.
var groupNotFound = missing("scaling group")

// checkGroupRefs checks what a group's template and spec name in its
// project: NIC networks and security groups, the balancer (and that a
// NIC reaches its network), the image, and that the minimum fits the
// quota (each member is still admitted on its own when it is created).
func (s *Server) checkGroupRefs(ctx context.Context, project string, spec *model.GroupSpec) error {
	t := &spec.Template
	for i, nic := range t.NICs {
		f := fmt.Sprintf("spec.template.nics[%d]", i)
		if nic.IP != "" || nic.MAC != "" {
			return fieldError(f+".ip", "a group's members each get their own address and MAC: leave ip and mac out")
		}
		if nic.Network == "" {
			continue
		}
		if _, err := s.repo.GetNetwork(ctx, project, nic.Network); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fieldError(f+".network", "network %q does not exist in project %s", nic.Network, project)
			}
			return err
		}
		for j, g := range nic.SecurityGroups {
			if _, err := s.repo.GetSecurityGroup(ctx, project, g); errors.Is(err, store.ErrNotFound) {
				return fieldError(fmt.Sprintf("%s.securityGroups[%d]", f, j), "security group %q does not exist in project %s", g, project)
			} else if err != nil {
				return err
			}
		}
	}
	if spec.LB != "" {
		b, err := s.repo.GetLB(ctx, project, spec.LB)
		if errors.Is(err, store.ErrNotFound) {
			return fieldError("spec.lb", "load balancer %q does not exist in project %s", spec.LB, project)
		}
		if err != nil {
			return err
		}
		ok := false
		for _, nic := range t.NICs {
			ok = ok || nic.Network == b.Spec.Network
		}
		if !ok {
			return fieldError("spec.template.nics", "members of a group behind load balancer %s need a NIC on its network %s", spec.LB, b.Spec.Network)
		}
	}
	probe := &model.VM{Meta: model.Meta{Name: "probe", Project: project}, Spec: *t}
	if err := s.repo.CheckImages(ctx, []*model.VM{probe}); err != nil {
		var fe *model.FieldError
		if errors.As(err, &fe) {
			return fieldError(strings.Replace(fe.Field, "spec.", "spec.template.", 1), "%s", fe.Message)
		}
		return err
	}
	p, err := s.repo.GetProject(ctx, project)
	if err != nil {
		return projectErr(err, project)
	}
	u, _, err := s.repo.GetUsage(ctx, project)
	if err != nil {
		return err
	}
	d := t.Demand()
	n := spec.Min
	if err := p.Quota.Admit(u, d.CPUs*n, d.Memory*model.Bytes(n), d.Disk*model.Bytes(n), n); err != nil {
		return errf(http.StatusForbidden, api.CodeQuotaExceeded, "spec.min", "%d members do not fit the project's quota: %v", n, err)
	}
	return nil
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.GroupCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("name", req.Name); err != nil {
		return err
	}
	if len(req.Name) > 50 {
		return fieldError("name", "is %d characters: a group's name is at most 50, so that its members' names (NAME-N) fit", len(req.Name))
	}
	if err := checkCloudInitInput(req.Spec.Template.CloudInit, "spec.template.cloudInit"); err != nil {
		return err
	}
	if err := req.Spec.Validate(); err != nil {
		return err
	}
	if _, err := s.repo.GetProject(r.Context(), project); err != nil {
		return projectErr(err, project)
	}
	if err := s.checkGroupRefs(r.Context(), project, &req.Spec); err != nil {
		return err
	}
	// the members copy the template's sealed user data (sealed for the
	// project, not for one VM)
	if err := s.sealSpecs(project, []*model.VMSpec{&req.Spec.Template}, []string{"spec.template.cloudInit"}); err != nil {
		return err
	}
	g, err := s.repo.CreateGroup(r.Context(), &model.ScalingGroup{Meta: model.Meta{Name: req.Name, Project: project}, Spec: req.Spec})
	if err != nil {
		return projectErr(err, project)
	}
	reply(w, http.StatusCreated, p, g)
	return nil
}

func (s *Server) patchGroup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.GroupPatchRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	name := r.PathValue("name")
	cur, err := s.repo.GetGroup(r.Context(), project, name)
	if err != nil {
		return groupNotFound(err, project, name)
	}
	spec := cur.Spec
	if req.Min != nil {
		spec.Min = *req.Min
	}
	if req.Max != nil {
		spec.Max = *req.Max
	}
	if req.TargetCPU != nil {
		spec.TargetCPU = *req.TargetCPU
	}
	if req.Schedules != nil {
		spec.Schedules = *req.Schedules
	}
	if err := spec.Validate(); err != nil {
		var fe *model.FieldError
		if errors.As(err, &fe) {
			return fieldError(strings.TrimPrefix(fe.Field, "spec."), "%s", fe.Message)
		}
		return err
	}
	g, err := s.repo.UpdateGroup(r.Context(), project, name, func(g *model.ScalingGroup) ([]model.Event, error) {
		if g.DeletedAt != nil {
			return nil, conflict("scaling group %s is being deleted", name)
		}
		g.Spec = spec
		return []model.Event{{Kind: "group.changed", Message: fmt.Sprintf("scaling group %s changed: %d to %d members, target CPU %.0f%%, %d schedule(s)",
			name, spec.Min, spec.Max, spec.TargetCPU, len(spec.Schedules))}}, nil
	})
	if err != nil {
		return groupNotFound(err, project, name)
	}
	reply(w, http.StatusOK, p, g)
	return nil
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	now := s.now()
	g, err := s.repo.UpdateGroup(r.Context(), project, name, func(g *model.ScalingGroup) ([]model.Event, error) {
		if g.DeletedAt != nil {
			return nil, state.ErrSkip
		}
		g.DeletedAt = &now
		return []model.Event{{Kind: "group.deleting", Message: fmt.Sprintf("scaling group %s is being deleted: its %d member(s) drain, then go", name, len(g.Status.Members))}}, nil
	})
	if err != nil {
		return groupNotFound(err, project, name)
	}
	reply(w, http.StatusAccepted, p, g)
	return nil
}
