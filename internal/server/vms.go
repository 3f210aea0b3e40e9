package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// buildVM validates a name and spec into a VM of project. prefix is put
// in front of field names (for batch items).
func buildVM(project, name string, spec model.VMSpec, prefix string) (*model.VM, error) {
	if err := model.ValidName(prefix+"name", name); err != nil {
		return nil, err
	}
	spec.RestartNonce = 0
	if err := spec.Validate(); err != nil {
		var fe *model.FieldError
		if prefix != "" && errors.As(err, &fe) {
			return nil, &model.FieldError{Field: prefix + fe.Field, Message: fe.Message}
		}
		return nil, err
	}
	if err := checkSSHKeys(&spec, prefix); err != nil {
		return nil, err
	}
	return &model.VM{Meta: model.Meta{Name: name, Project: project}, Spec: spec}, nil
}

// projectErr turns "project not found" from admission into a clear 404.
func projectErr(err error, project string) error {
	if errors.Is(err, store.ErrNotFound) && !errors.Is(err, state.ErrExists) {
		return notFound("project %q not found", project)
	}
	return err
}

func (s *Server) createVM(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.VMCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := checkCloudInitInput(req.Spec.CloudInit, "spec.cloudInit"); err != nil {
		return err
	}
	vm, err := buildVM(project, req.Name, req.Spec, "")
	if err != nil {
		return err
	}
	if err := s.sealSpecs(project, []*model.VMSpec{&vm.Spec}, []string{"spec.cloudInit"}); err != nil {
		return err
	}
	if err := s.checkStorage(r.Context(), []*model.VMSpec{&vm.Spec}, []string{""}); err != nil {
		return err
	}
	if err := s.checkHAReserve(r.Context(), []*model.VM{vm}, req.DryRun); err != nil {
		return err
	}
	if err := s.fitImages(r.Context(), []*model.VM{vm}); err != nil {
		return err
	}
	if !req.DryRun {
		done, err := s.backlog.acquire(r.Context(), w, 1)
		if err != nil {
			return err
		}
		defer done()
	}
	release, err := s.attachVMs(r.Context(), []*model.VM{vm}, []string{""}, req.DryRun)
	if err != nil {
		return err
	}
	if req.DryRun {
		res, err := s.dryRun(r, []*model.VM{vm})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, res[0])
		return nil
	}
	created, err := s.repo.CreateVM(r.Context(), vm)
	if err != nil {
		release()
		return projectErr(err, project)
	}
	reply(w, http.StatusCreated, p, created)
	return nil
}

func (s *Server) dryRun(r *http.Request, vms []*model.VM) ([]api.DryRunResponse, error) {
	if s.cfg.Placer == nil {
		return nil, errf(http.StatusNotImplemented, api.CodeUnavailable, "dryRun",
			"dry-run placement needs the scheduler, which this server does not run")
	}
	if _, err := s.repo.GetProject(r.Context(), vms[0].Project); err != nil {
		return nil, projectErr(err, vms[0].Project)
	}
	if err := s.repo.CheckImages(r.Context(), vms); err != nil {
		return nil, err
	}
	if err := s.dryRunQuota(r.Context(), vms[0].Project, vms); err != nil {
		return nil, err
	}
	if bp, ok := s.cfg.Placer.(BatchPlacer); ok && len(vms) > 1 {
		return bp.PlaceBatch(r.Context(), vms)
	}
	out := make([]api.DryRunResponse, 0, len(vms))
	for _, vm := range vms {
		res, err := s.cfg.Placer.Place(r.Context(), vm)
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}

func (s *Server) batchVMs(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.VMBatchRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	vms, err := batchItems(project, &req)
	if err != nil {
		return err
	}
	if err := s.sealBatch(project, &req, vms); err != nil {
		return err
	}
	if err := s.checkBatchStorage(r, &req, vms); err != nil {
		return err
	}
	if err := s.checkHAReserve(r.Context(), vms, req.DryRun); err != nil {
		return err
	}
	if err := s.fitImages(r.Context(), vms); err != nil {
		return err
	}
	if !req.DryRun {
		done, err := s.backlog.acquire(r.Context(), w, len(vms))
		if err != nil {
			return err
		}
		defer done()
	}
	prefixes := make([]string, len(vms))
	for i := range vms {
		if len(req.VMs) > 0 {
			prefixes[i] = fmt.Sprintf("vms[%d].", i)
		}
	}
	release, err := s.attachVMs(r.Context(), vms, prefixes, req.DryRun)
	if err != nil {
		return err
	}
	if req.DryRun {
		res, err := s.dryRun(r, vms)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, res)
		return nil
	}
	created, err := s.repo.CreateVMs(r.Context(), project, vms)
	if err != nil {
		release()
		return projectErr(err, project)
	}
	out := api.VMBatchResponse{VMs: make([]model.VM, len(created))}
	for i, v := range created {
		out.VMs[i] = *v
	}
	reply(w, http.StatusCreated, p, out)
	return nil
}

// checkBatchStorage runs checkStorage on a batch, naming the item's
// fields as the request does (vms[i].spec... or spec...).
func (s *Server) checkBatchStorage(r *http.Request, req *api.VMBatchRequest, vms []*model.VM) error {
	if len(req.VMs) == 0 {
		return s.checkStorage(r.Context(), []*model.VMSpec{&vms[0].Spec}, []string{""})
	}
	specs, prefixes := make([]*model.VMSpec, len(vms)), make([]string, len(vms))
	for i, v := range vms {
		specs[i], prefixes[i] = &v.Spec, fmt.Sprintf("vms[%d].", i)
	}
	return s.checkStorage(r.Context(), specs, prefixes)
}

// sealBatch seals the user data of a batch's VMs (userdata.go).
func (s *Server) sealBatch(project string, req *api.VMBatchRequest, vms []*model.VM) error {
	specs, fields := make([]*model.VMSpec, len(vms)), make([]string, len(vms))
	for i, v := range vms {
		specs[i], fields[i] = &v.Spec, "spec.cloudInit"
		if len(req.VMs) > 0 {
			fields[i] = fmt.Sprintf("vms[%d].spec.cloudInit", i)
		}
	}
	return s.sealSpecs(project, specs, fields)
}

// batchItems validates a batch request into VMs.
func batchItems(project string, req *api.VMBatchRequest) ([]*model.VM, error) {
	if len(req.VMs) > 0 && (req.Prefix != "" || req.Count != 0 || req.Spec != nil) {
		return nil, fieldError("vms", "give either vms, or prefix + count + spec, not both")
	}
	var vms []*model.VM
	if len(req.VMs) > 0 {
		if len(req.VMs) > state.MaxBatch {
			return nil, fieldError("vms", "at most %d VMs per batch (got %d)", state.MaxBatch, len(req.VMs))
		}
		for i, it := range req.VMs {
			if it.DryRun {
				return nil, fieldError(fmt.Sprintf("vms[%d].dryRun", i), "set dryRun on the batch, not on its items")
			}
			if err := checkCloudInitInput(it.Spec.CloudInit, fmt.Sprintf("vms[%d].spec.cloudInit", i)); err != nil {
				return nil, err
			}
			vm, err := buildVM(project, it.Name, it.Spec, fmt.Sprintf("vms[%d].", i))
			if err != nil {
				return nil, err
			}
			vms = append(vms, vm)
		}
		return vms, nil
	}
	if err := model.ValidName("prefix", req.Prefix); err != nil {
		return nil, err
	}
	if req.Count < 1 || req.Count > state.MaxBatch {
		return nil, fieldError("count", "must be between 1 and %d (got %d)", state.MaxBatch, req.Count)
	}
	if req.Spec == nil {
		return nil, fieldError("spec", "is required with prefix and count")
	}
	if err := checkCloudInitInput(req.Spec.CloudInit, "spec.cloudInit"); err != nil {
		return nil, err
	}
	for i := 1; i <= req.Count; i++ {
		name := req.Prefix + "-" + strconv.Itoa(i)
		if len(name) > 63 {
			return nil, fieldError("prefix", "%q is too long: the VM names %s-1..%s-%d must fit in 63 characters", req.Prefix, req.Prefix, req.Prefix, req.Count)
		}
		vm, err := buildVM(project, name, *req.Spec, "")
		if err != nil {
			return nil, err
		}
		vms = append(vms, vm)
	}
	return vms, nil
}

func vmNotFound(err error, project, name string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("VM %q not found in project %q", name, project)
	}
	return err
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	var minRev int64
	if v := r.URL.Query().Get("min-revision"); v != "" {
		if minRev, err = parseMinRevision(v); err != nil {
			return err
		}
	}
	vm, t, err := s.view.vm(r.Context(), s.repo, project, name, minRev)
	t.header(w)
	if err != nil {
		return vmNotFound(err, project, name)
	}
	s.vmWithUsage(vm)
	if err := s.withExplanation(r.Context(), vm); err != nil {
		return err
	}
	reply(w, http.StatusOK, p, vm)
	return nil
}

// withExplanation fills in vm's placement explanation, stored apart from
// its record (state.ReadExplanation: one read of a small key, in process
// from an embedded member, for GET vm only; lists, the agents'
// assignments and the other answers carry the record as stored). vm is
// the handler's own decoded copy.
func (s *Server) withExplanation(ctx context.Context, vm *model.VM) error {
	if vm.Status.Explanation != nil {
		return nil
	}
	ex, err := state.ReadExplanation(ctx, s.cfg.Store, vm)
	if err != nil {
		return err
	}
	vm.Status.Explanation = ex
	return nil
}

var errBeingDeleted = errors.New("server: vm is being deleted")

func (s *Server) updateVM(r *http.Request, p *principal, fn func(*model.VM) error) (*model.VM, string, string, error) {
	project, err := s.scope(r, p, true)
	if err != nil {
		return nil, "", "", err
	}
	name := r.PathValue("name")
	vm, err := s.repo.UpdateVM(r.Context(), project, name, func(v *model.VM) error {
		if v.DeletedAt != nil {
			return errBeingDeleted
		}
		return fn(v)
	})
	if errors.Is(err, errBeingDeleted) {
		return nil, project, name, conflict("VM %q is being deleted", name)
	}
	if err != nil {
		return nil, project, name, vmNotFound(err, project, name)
	}
	return vm, project, name, nil
}

func (s *Server) patchVM(w http.ResponseWriter, r *http.Request, p *principal) error {
	if _, err := s.scope(r, p, true); err != nil {
		return err
	}
	var req api.VMPatchRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	vm, _, _, err := s.updateVM(r, p, func(v *model.VM) error {
		spec := v.Spec
		if req.VCPUs != nil {
			spec.VCPUs = *req.VCPUs
		}
		if req.Memory != nil {
			spec.Memory = *req.Memory
		}
		if req.Labels != nil {
			spec.Labels = req.Labels
		}
		if req.Controls != nil {
			spec.Controls = *req.Controls
		}
		if err := spec.Validate(); err != nil {
			var fe *model.FieldError
			if errors.As(err, &fe) {
				return fieldError(strings.TrimPrefix(fe.Field, "spec."), "%s", fe.Message)
			}
			return err
		}
		resized := spec.VCPUs != v.Spec.VCPUs || spec.Memory != v.Spec.Memory
		from := v.Spec
		v.Spec = spec
		if resized && v.Status.Host != "" {
			if v.Status.Migration != "" {
				return conflict("VM %q is migrating; resize it when it has moved", v.Name)
			}
			// The agent tries a live resize and refuses what needs a
			// restart (the spec then goes back) unless Restart is set.
			noteResize(v, from, req.Restart)
		}
		if req.Restart {
			v.Spec.RestartNonce++
		}
		return nil
	})
	if err != nil {
		return err
	}
	reply(w, http.StatusOK, p, vm)
	return nil
}

func (s *Server) deleteVM(w http.ResponseWriter, r *http.Request, p *principal) error {
	now := s.now()
	deleteNow := errors.New("unassigned")
	vm, project, name, err := s.updateVMForDelete(r, p, func(v *model.VM) error {
		if v.Status.Host == "" {
			return deleteNow
		}
		if v.DeletedAt != nil {
			return state.ErrSkip
		}
		v.DeletedAt = &now
		v.Status.Phase = model.PhaseDeleting
		return nil
	})
	if errors.Is(err, deleteNow) {
		if err := s.repo.FinishDeleteVM(r.Context(), project, name); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, vm)
	return nil
}

func (s *Server) updateVMForDelete(r *http.Request, p *principal, fn func(*model.VM) error) (*model.VM, string, string, error) {
	project, err := s.scope(r, p, true)
	if err != nil {
		return nil, "", "", err
	}
	name := r.PathValue("name")
	vm, err := s.repo.UpdateVM(r.Context(), project, name, fn)
	if err != nil && errors.Is(err, store.ErrNotFound) {
		return nil, project, name, vmNotFound(err, project, name)
	}
	return vm, project, name, err
}

// powerVM handles start, stop and restart: they change the desired state
// and the agent converges.
func (s *Server) powerVM(op string) func(http.ResponseWriter, *http.Request, *principal) error {
	return func(w http.ResponseWriter, r *http.Request, p *principal) error {
		vm, _, _, err := s.updateVM(r, p, func(v *model.VM) error {
			switch op {
			case "start":
				v.Spec.Power = model.PowerRunning
				v.Spec.StopForce, v.Spec.StopTimeout = false, 0
			case "restart":
				if v.Spec.Power == model.PowerStopped {
					v.Spec.Power = model.PowerRunning
				} else {
					v.Spec.RestartNonce++
				}
			}
			if v.Status.Message != "" && strings.HasPrefix(v.Status.Message, "restart needed") && op != "stop" {
				v.Status.Message = ""
			}
			return nil
		})
		if err != nil {
			return err
		}
		reply(w, http.StatusAccepted, p, vm)
		return nil
	}
}
