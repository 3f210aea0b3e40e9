package server

import (
	"net/http"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// stopVM asks for a stop: graceful (with an optional timeout) or forced.
// The body is optional.
func (s *Server) stopVM(w http.ResponseWriter, r *http.Request, p *principal) error {
	var req api.VMStopRequest
	if r.ContentLength != 0 {
		if he := decodeJSON(w, r, &req); he != nil {
			return he
		}
	}
	if req.TimeoutSeconds < 0 || req.TimeoutSeconds > model.MaxStopTimeout {
		return fieldError("timeoutSeconds", "must be between 0 (the host's default) and %d (got %d)", model.MaxStopTimeout, req.TimeoutSeconds)
	}
	if req.Force && req.TimeoutSeconds > 0 {
		return fieldError("force", "a forced stop waits for nothing: give force or timeoutSeconds, not both")
	}
	vm, _, _, err := s.updateVM(r, p, func(v *model.VM) error {
		v.Spec.Power = model.PowerStopped
		v.Spec.StopForce, v.Spec.StopTimeout = req.Force, req.TimeoutSeconds
		if v.Status.Phase == model.PhaseRunning || v.Status.Phase == model.PhasePaused {
			v.Status.Phase = model.PhaseStopping
		}
		return nil
	})
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, vm)
	return nil
}

// resizeDisk grows one disk of a VM; the quota and the host's allocation
// grow in the same transaction, and the agent grows the disk (live when
// the VM runs) and reports its new size in status.disks.
func (s *Server) resizeDisk(w http.ResponseWriter, r *http.Request, p *principal) error {
	if _, err := s.scope(r, p, true); err != nil {
		return err
	}
	var req api.DiskResizeRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	disk := r.PathValue("disk")
	vm, _, _, err := s.updateVM(r, p, func(v *model.VM) error {
		if v.Status.Migration != "" {
			return conflict("VM %q is migrating; resize the disk when it has moved", v.Name)
		}
		spec := v.Spec
		spec.Disks = append([]model.Disk(nil), v.Spec.Disks...)
		for i := range spec.Disks {
			d := &spec.Disks[i]
			if d.Name != disk {
				continue
			}
			switch {
			case req.Size < d.Size:
				return fieldError("size", "disk %s is %s: disks only grow (shrinking would cut its file system)", disk, d.Size)
			case req.Size == d.Size:
				return fieldError("size", "disk %s is %s already", disk, d.Size)
			}
			d.Size = req.Size
			if err := spec.Validate(); err != nil {
				return specFieldError(err)
			}
			v.Spec = spec
			return nil
		}
		return notFound("VM %q has no disk %q", v.Name, disk)
	})
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, vm)
	return nil
}
