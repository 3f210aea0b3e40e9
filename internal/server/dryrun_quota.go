package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// dryRunQuota runs a create's quota admission without storing anything:
// a dry run answers what the create would, and when the quota refuses,
// how many of the VMs it would take.
func (s *Server) dryRunQuota(ctx context.Context, project string, vms []*model.VM) error {
	p, err := s.repo.GetProject(ctx, project)
	if err != nil {
		return projectErr(err, project)
	}
	u, _, err := s.repo.GetUsage(ctx, project)
	if err != nil {
		return err
	}
	var demand model.Resources
	fits := 0
	for _, vm := range vms {
		demand = demand.Add(vm.Spec.Demand())
		err := p.Quota.Admit(u, demand.CPUs, demand.Memory, demand.Disk, fits+1)
		if err == nil {
			fits++
			continue
		}
		field, msg := "", err.Error()
		var fe *model.FieldError
		if errors.As(err, &fe) {
			field, msg = fe.Field, fe.Message
		}
		return errf(http.StatusForbidden, api.CodeQuotaExceeded, field,
			"%s: project %s's quota takes %d of these %d VM(s); the create would be refused (dry run: nothing was created)",
			msg, project, fits, len(vms))
	}
	return nil
}
