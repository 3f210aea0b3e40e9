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

// vmOpEndpoints are the per-VM operations that an agent carries out:
// snapshots, disk hot-plug and the serial console.
func (s *Server) vmOpEndpoints() []endpoint {
	scoped := []string{"project"}
	return []endpoint{
		{method: "GET", path: "/api/v1/vms/{name}/snapshots", handle: s.listSnapshots, resp: api.SnapshotList{}, status: 200, query: scoped},
		{method: "POST", path: "/api/v1/vms/{name}/snapshots", handle: s.createSnapshot, req: api.SnapshotCreateRequest{}, resp: model.Snapshot{}, status: 202, query: scoped},
		{method: "GET", path: "/api/v1/vms/{name}/snapshots/{snapshot}", handle: s.getSnapshot, resp: model.Snapshot{}, status: 200, query: scoped},
		{method: "POST", path: "/api/v1/vms/{name}/snapshots/{snapshot}/revert", handle: s.revertSnapshot, resp: model.Snapshot{}, status: 202, query: scoped},
		{method: "DELETE", path: "/api/v1/vms/{name}/snapshots/{snapshot}", handle: s.deleteSnapshot, resp: model.Snapshot{}, status: 202, query: scoped},
		{method: "POST", path: "/api/v1/vms/{name}/disks", handle: s.addDisk, req: api.DiskAddRequest{}, resp: model.VM{}, status: 202, query: scoped},
		{method: "DELETE", path: "/api/v1/vms/{name}/disks/{disk}", handle: s.removeDisk, resp: model.VM{}, status: 202, query: scoped},
		{method: "PATCH", path: "/api/v1/vms/{name}/disks/{disk}", handle: s.resizeDisk, req: api.DiskResizeRequest{}, resp: model.VM{}, status: 202, query: scoped},
		{method: "GET", path: "/api/v1/vms/{name}/console", handle: s.consoleAttach, status: 101, query: scoped},
		{method: "GET", path: "/api/v1/vms/{name}/console/log", handle: s.consoleLog, resp: api.ConsoleLog{}, status: 200, query: []string{"project", "tail"}},
	}
}

// vmOpAgentEndpoints are the agent's side of those operations.
func (s *Server) vmOpAgentEndpoints() []agentEndpoint {
	return []agentEndpoint{
		{method: "PUT", path: "/agent/v1/snapshots/{project}/{vm}/{name}", handle: s.snapshotReport, needCert: true, req: api.SnapshotReport{}, resp: model.Snapshot{}, status: 200},
		{method: "GET", path: "/agent/v1/consoles", handle: s.consoleRequests, needCert: true, resp: api.ConsoleRequests{}, status: 200, query: []string{"wait"}},
		{method: "GET", path: "/agent/v1/consoles/{id}", handle: s.consoleAgent, needCert: true, status: 101},
	}
}

// --- snapshots ---

func snapshotNotFound(err error, vm, name string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound("snapshot %q of VM %q not found", name, vm)
	}
	return err
}

func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	name := r.PathValue("name")
	if _, err := s.repo.GetVM(r.Context(), project, name); err != nil {
		return vmNotFound(err, project, name)
	}
	items, _, err := s.repo.ListSnapshots(r.Context(), project, name)
	if err != nil {
		return err
	}
	out := api.SnapshotList{Items: make([]model.Snapshot, len(items))}
	for i, it := range items {
		out.Items[i] = *it
	}
	reply(w, http.StatusOK, p, out)
	return nil
}

func (s *Server) getSnapshot(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	vm, name := r.PathValue("name"), r.PathValue("snapshot")
	snap, err := s.repo.GetSnapshot(r.Context(), project, vm, name)
	if err != nil {
		return snapshotNotFound(err, vm, name)
	}
	reply(w, http.StatusOK, p, snap)
	return nil
}

// assignedVM returns a VM that an agent can work on: placed, not being
// deleted, not migrating.
func (s *Server) assignedVM(ctx context.Context, project, name, what string) (*model.VM, error) {
	vm, err := s.repo.GetVM(ctx, project, name)
	if err != nil {
		return nil, vmNotFound(err, project, name)
	}
	switch {
	case vm.DeletedAt != nil:
		return nil, conflict("VM %q is being deleted", name)
	case vm.Status.Host == "":
		return nil, conflict("VM %q is not placed on a host yet; %s needs a host", name, what)
	case vm.Status.Migration != "":
		return nil, conflict("VM %q is migrating (%s); try again when it has moved", name, vm.Status.Migration)
	}
	return vm, nil
}

func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.SnapshotCreateRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("name", req.Name); err != nil {
		return err
	}
	vm, err := s.assignedVM(r.Context(), project, r.PathValue("name"), "a snapshot")
	if err != nil {
		return err
	}
	if req.Memory && vm.Status.Phase != model.PhaseRunning && vm.Status.Phase != model.PhasePaused {
		return fieldError("memory", "a memory snapshot needs a running VM (%q is %s); leave out --memory for a disk snapshot", vm.Name, vm.Status.Phase)
	}
	snap, err := s.repo.CreateSnapshot(r.Context(), vm, &model.Snapshot{Meta: model.Meta{Name: req.Name}, Memory: req.Memory})
	if errors.Is(err, state.ErrSnapshotLimit) {
		return conflict("VM %q already holds %d snapshots; delete one first", vm.Name, state.MaxSnapshots)
	}
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, snap)
	return nil
}

func (s *Server) revertSnapshot(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	vmName, name := r.PathValue("name"), r.PathValue("snapshot")
	if _, err := s.assignedVM(r.Context(), project, vmName, "a revert"); err != nil {
		return err
	}
	snap, err := s.repo.UpdateSnapshot(r.Context(), project, vmName, name, func(sn *model.Snapshot) error {
		if sn.Phase != model.SnapshotReady {
			return conflict("snapshot %q is %s; only a ready snapshot can be reverted to", name, sn.Phase)
		}
		sn.Phase, sn.Error = model.SnapshotReverting, ""
		sn.RevertNonce++
		return nil
	})
	if err != nil {
		return snapshotNotFound(err, vmName, name)
	}
	reply(w, http.StatusAccepted, p, snap)
	return nil
}

func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	vmName, name := r.PathValue("name"), r.PathValue("snapshot")
	vm, err := s.repo.GetVM(r.Context(), project, vmName)
	if err != nil {
		return vmNotFound(err, project, vmName)
	}
	now := errors.New("forget")
	snap, err := s.repo.UpdateSnapshot(r.Context(), project, vmName, name, func(sn *model.Snapshot) error {
		switch {
		case sn.Phase == model.SnapshotFailed || vm.Status.Host == "" || vm.Status.Host != sn.Host:
			return now // nothing on any host to remove
		case sn.Phase == model.SnapshotDeleting:
			return state.ErrSkip
		case sn.Phase != model.SnapshotReady:
			return conflict("snapshot %q is %s; wait until it is ready", name, sn.Phase)
		}
		sn.Phase, sn.Error = model.SnapshotDeleting, ""
		return nil
	})
	if errors.Is(err, now) {
		if err := s.repo.DeleteSnapshot(r.Context(), project, vmName, name); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err != nil {
		return snapshotNotFound(err, vmName, name)
	}
	reply(w, http.StatusAccepted, p, snap)
	return nil
}

// snapshotReport applies an agent's answer to a snapshot request.
func (s *Server) snapshotReport(w http.ResponseWriter, r *http.Request, host string) error {
	var rep api.SnapshotReport
	if he := decodeJSON(w, r, &rep); he != nil {
		return he
	}
	project, vm, name := r.PathValue("project"), r.PathValue("vm"), r.PathValue("name")
	ctx := r.Context()
	gone := errors.New("gone")
	snap, err := s.repo.UpdateSnapshot(ctx, project, vm, name, func(sn *model.Snapshot) error {
		if sn.Host != host {
			return conflict("snapshot %s/%s/%s is not on host %s", project, vm, name, host)
		}
		if rep.Gone {
			if sn.Phase == model.SnapshotDeleting || sn.Phase == model.SnapshotFailed || sn.Phase == model.SnapshotPending {
				return gone
			}
			return state.ErrSkip
		}
		now := s.now()
		switch {
		case sn.Phase == model.SnapshotPending && (rep.Phase == model.SnapshotReady || rep.Phase == model.SnapshotFailed):
			sn.Phase, sn.Error = rep.Phase, rep.Error
			if rep.Phase == model.SnapshotReady {
				sn.ReadyAt = &now
			}
		case sn.Phase == model.SnapshotReverting && rep.RevertNonce == sn.RevertNonce:
			sn.Phase, sn.Error = model.SnapshotReady, rep.Error
			if rep.Error == "" {
				sn.RevertedAt = &now
			}
		case sn.Phase == model.SnapshotDeleting && rep.Error != "":
			sn.Phase, sn.Error = model.SnapshotReady, rep.Error
		default:
			return state.ErrSkip // stale or repeated
		}
		return nil
	})
	switch {
	case errors.Is(err, gone):
		if err := s.repo.DeleteSnapshot(ctx, project, vm, name); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	case rep.Gone && errors.Is(err, store.ErrNotFound):
		w.WriteHeader(http.StatusNoContent)
		return nil
	case err != nil:
		return snapshotNotFound(err, vm, name)
	}
	writeJSON(w, http.StatusOK, snap)
	return nil
}

// --- disks ---

func (s *Server) addDisk(w http.ResponseWriter, r *http.Request, p *principal) error {
	if _, err := s.scope(r, p, true); err != nil {
		return err
	}
	var req api.DiskAddRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if req.Name != "" {
		if err := model.ValidName("name", req.Name); err != nil {
			return err
		}
	}
	probe := model.VMSpec{Disks: []model.Disk{{Name: req.Name, Size: req.Size, Pool: req.Pool, Tier: req.Tier}}}
	if err := s.checkStorage(r.Context(), []*model.VMSpec{&probe}, []string{""}); err != nil {
		return diskFieldError(err, 0)
	}
	vm, _, _, err := s.updateVM(r, p, func(v *model.VM) error {
		if v.Status.Migration != "" {
			return conflict("VM %q is migrating; add the disk when it has moved", v.Name)
		}
		d := model.Disk{Name: req.Name, Size: req.Size, Pool: req.Pool, Tier: req.Tier, Encrypted: req.Encrypted}
		if d.Name == "" {
			d.Name = freeDiskName(v.Spec.Disks)
		}
		for _, have := range v.Spec.Disks {
			if have.Name == d.Name {
				return conflict("VM %q already has a disk named %q", v.Name, d.Name)
			}
		}
		spec := v.Spec
		spec.Disks = append(append([]model.Disk(nil), v.Spec.Disks...), d)
		if err := spec.Validate(); err != nil {
			return diskFieldError(err, len(spec.Disks)-1)
		}
		v.Spec = spec
		return nil
	})
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, vm)
	return nil
}

func (s *Server) removeDisk(w http.ResponseWriter, r *http.Request, p *principal) error {
	disk := r.PathValue("disk")
	vm, _, _, err := s.updateVM(r, p, func(v *model.VM) error {
		if v.Status.Migration != "" {
			return conflict("VM %q is migrating; remove the disk when it has moved", v.Name)
		}
		i := -1
		for j, d := range v.Spec.Disks {
			if d.Name == disk {
				i = j
			}
		}
		switch {
		case i < 0:
			return notFound("VM %q has no disk named %q", v.Name, disk)
		case i == 0:
			return conflict("disk %q is the VM's boot disk; it goes only with the VM", disk)
		}
		v.Spec.Disks = append(append([]model.Disk(nil), v.Spec.Disks[:i]...), v.Spec.Disks[i+1:]...)
		return nil
	})
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, vm)
	return nil
}

// freeDiskName returns the first disk<N> not used by disks.
func freeDiskName(disks []model.Disk) string {
	used := map[string]bool{}
	for _, d := range disks {
		used[d.Name] = true
	}
	for i := len(disks); ; i++ {
		if n := fmt.Sprintf("disk%d", i); !used[n] {
			return n
		}
	}
}

// diskFieldError names a validation failure of the added disk (at index
// i of the spec) by the request's own fields: size, pool, tier, name.
func diskFieldError(err error, i int) error {
	var fe *model.FieldError
	var he *httpError
	prefix := fmt.Sprintf("spec.disks[%d].", i)
	switch {
	case errors.As(err, &fe) && strings.HasPrefix(fe.Field, prefix):
		return fieldError(strings.TrimPrefix(fe.Field, prefix), "%s", fe.Message)
	case errors.As(err, &he) && strings.HasPrefix(he.body.Field, prefix):
		return fieldError(strings.TrimPrefix(he.body.Field, prefix), "%s", he.body.Message)
	}
	return specFieldError(err)
}

func specFieldError(err error) error {
	var fe *model.FieldError
	if errors.As(err, &fe) {
		return fieldError(strings.TrimPrefix(fe.Field, "spec."), "%s", fe.Message)
	}
	return err
}

// --- resize ---

// noteResize records a resize of an assigned VM as a pending ResizeOp for
// its agent to answer (patchVM calls it after changing the spec). A
// resize asked for while another is pending keeps the original size to
// go back to.
func noteResize(v *model.VM, from model.VMSpec, restart bool) {
	op := &model.ResizeOp{ID: 1, FromVCPUs: from.VCPUs, FromMemory: from.Memory, VCPUs: v.Spec.VCPUs,
		Memory: v.Spec.Memory, Restart: restart, Phase: model.ResizePending}
	if prev := v.Status.Resize; prev != nil {
		op.ID = prev.ID + 1
		if prev.Phase == model.ResizePending {
			op.FromVCPUs, op.FromMemory = prev.FromVCPUs, prev.FromMemory
		}
	}
	v.Status.Resize = op
}

// applyResizeResult applies an agent's answer to the VM's pending resize;
// a refusal puts the spec back to the size the VM has. It reports whether
// v changed.
func applyResizeResult(v *model.VM, res *api.ResizeResult) bool {
	op := v.Status.Resize
	if res == nil || op == nil || op.ID != res.ID || op.Phase != model.ResizePending {
		return false
	}
	op.Message = res.Message
	if !res.Refused {
		op.Phase = model.ResizeDone
		return true
	}
	op.Phase = model.ResizeRefused
	if v.Spec.VCPUs == op.VCPUs && v.Spec.Memory == op.Memory {
		v.Spec.VCPUs, v.Spec.Memory = op.FromVCPUs, op.FromMemory
	}
	return true
}
