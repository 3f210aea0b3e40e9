package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// opsState is the agent's view of per-VM operations that arrive beside
// the assignments: snapshot requests. Its zero value is ready.
type opsState struct {
	mu    sync.Mutex
	snaps map[string][]model.Snapshot // by VM key
	// reverted is the revert nonce last acted on, by snapshot key, so
	// that a lost report does not revert twice.
	reverted map[string]int64
}

func (o *opsState) set(snaps []model.Snapshot) {
	m := map[string][]model.Snapshot{}
	for _, s := range snaps {
		k := s.Project + "/" + s.VM
		m[k] = append(m[k], s)
	}
	o.mu.Lock()
	o.snaps = m
	o.mu.Unlock()
}

func (o *opsState) of(key string) []model.Snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]model.Snapshot(nil), o.snaps[key]...)
}

func (o *opsState) revertedAt(key string) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reverted[key]
}

func (o *opsState) setReverted(key string, nonce int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.reverted == nil {
		o.reverted = map[string]int64{}
	}
	o.reverted[key] = nonce
}

// applySnapshots carries out the snapshot requests of vm, one at a time,
// inside the VM's converge worker (so never beside a start or stop of
// the same VM), and reports each outcome.
func (a *Agent) applySnapshots(ctx context.Context, vm *model.VM) {
	id := vmID(vm.Project, vm.Name)
	for _, sn := range a.ops.of(vm.Key()) {
		skey := vm.Key() + "/" + sn.Name
		var rep *api.SnapshotReport
		switch sn.Phase {
		case model.SnapshotPending:
			rep = a.createSnapshot(ctx, vm, id, sn)
		case model.SnapshotReverting:
			if a.ops.revertedAt(skey) == sn.RevertNonce {
				rep = &api.SnapshotReport{Phase: model.SnapshotReady, RevertNonce: sn.RevertNonce}
				break
			}
			rep = &api.SnapshotReport{Phase: model.SnapshotReady, RevertNonce: sn.RevertNonce}
			if err := a.revertSnapshot(ctx, vm, id, sn); err != nil {
				rep.Error = err.Error()
				a.log.Warn("snapshot revert failed", "vm", vm.Key(), "snapshot", sn.Name, "err", err)
			} else {
				a.log.Info("reverted VM to snapshot", "vm", vm.Key(), "snapshot", sn.Name)
			}
			a.ops.setReverted(skey, sn.RevertNonce)
		case model.SnapshotDeleting:
			rep = &api.SnapshotReport{Gone: true}
			err := a.cfg.Driver.DeleteSnapshot(ctx, id, sn.Name)
			if err != nil && !errors.Is(err, hypervisor.ErrSnapshotFound) {
				rep = &api.SnapshotReport{Phase: model.SnapshotReady, Error: "delete: " + err.Error()}
			}
		default:
			continue
		}
		if ctx.Err() != nil {
			return
		}
		path := fmt.Sprintf("%s/snapshots/%s/%s/%s", api.AgentPrefix, url.PathEscape(vm.Project), url.PathEscape(vm.Name), url.PathEscape(sn.Name))
		if err := a.client.do(ctx, http.MethodPut, path, rep, nil); err != nil && httpStatus(err) != http.StatusNotFound {
			a.log.Warn("snapshot report failed", "vm", vm.Key(), "snapshot", sn.Name, "err", err)
		}
	}
}

func (a *Agent) createSnapshot(ctx context.Context, vm *model.VM, id string, sn model.Snapshot) *api.SnapshotReport {
	err := a.cfg.Driver.Snapshot(ctx, id, sn.Name, sn.Memory)
	if err != nil && !errors.Is(err, hypervisor.ErrExists) {
		a.log.Warn("snapshot failed", "vm", vm.Key(), "snapshot", sn.Name, "err", err)
		return &api.SnapshotReport{Phase: model.SnapshotFailed, Error: err.Error()}
	}
	a.log.Info("snapshot taken", "vm", vm.Key(), "snapshot", sn.Name, "memory", sn.Memory)
	return &api.SnapshotReport{Phase: model.SnapshotReady}
}

// revertSnapshot reverts; a driver that reverts disk snapshots only on a
// stopped VM (ErrBadState) gets the VM stopped first and started again
// when it should run.
func (a *Agent) revertSnapshot(ctx context.Context, vm *model.VM, id string, sn model.Snapshot) error {
	d := a.cfg.Driver
	err := d.RevertSnapshot(ctx, id, sn.Name)
	if !errors.Is(err, hypervisor.ErrBadState) || sn.Memory {
		return err
	}
	if err := d.Stop(ctx, id, a.cfg.StopTimeout); err != nil {
		return fmt.Errorf("stop before revert: %w", err)
	}
	if err := d.RevertSnapshot(ctx, id, sn.Name); err != nil {
		return err
	}
	if vm.Spec.Power == model.PowerRunning {
		if err := d.Start(ctx, id); err != nil {
			return fmt.Errorf("start after revert: %w", err)
		}
	}
	return nil
}

// applyDisks makes the host's disks match the spec: attaches new ones,
// detaches removed ones and grows those the spec made bigger. It returns
// the disks as the host has them afterwards (what the report carries).
func (a *Agent) applyDisks(ctx context.Context, vm *model.VM, in *hypervisor.Info) ([]model.DiskStatus, error) {
	have := map[string]model.Bytes{}
	for _, d := range in.Config.Spec.Disks {
		have[d.Name] = d.Size
	}
	want := map[string]bool{}
	var add, grow []model.Disk
	for _, d := range vm.Spec.Disks {
		want[d.Name] = true
		size, ok := have[d.Name]
		switch {
		case !ok:
			add = append(add, d)
		case d.Size > size:
			grow = append(grow, d)
		}
	}
	var remove []string
	for _, d := range in.Config.Spec.Disks {
		if !want[d.Name] {
			remove = append(remove, d.Name)
		}
	}
	status := func() []model.DiskStatus {
		out := make([]model.DiskStatus, 0, len(vm.Spec.Disks))
		for _, d := range vm.Spec.Disks {
			if size, ok := have[d.Name]; ok {
				out = append(out, model.DiskStatus{Name: d.Name, Size: size})
			}
		}
		return out
	}
	if len(add) > 0 || len(remove) > 0 {
		if err := a.plugDisks(ctx, vm, in, add, remove); err != nil {
			return status(), err
		}
		for _, d := range add {
			have[d.Name] = d.Size
		}
	}
	if len(grow) > 0 {
		rs, ok := a.cfg.Driver.(hypervisor.DiskResizer)
		if !ok {
			return status(), fmt.Errorf("disk resize: driver %s: %w", a.cfg.Driver.Name(), hypervisor.ErrUnsupported)
		}
		for _, d := range grow {
			if err := rs.ResizeDisk(ctx, in.ID, d.Name, d.Size); err != nil {
				return status(), fmt.Errorf("resize disk %s: %w", d.Name, err)
			}
			a.log.Info("grew disk", "vm", vm.Key(), "disk", d.Name, "from", have[d.Name], "to", d.Size)
			have[d.Name] = d.Size
		}
	}
	return status(), nil
}

func (a *Agent) plugDisks(ctx context.Context, vm *model.VM, in *hypervisor.Info, add []model.Disk, remove []string) error {
	hp, ok := a.cfg.Driver.(hypervisor.DiskHotplugger)
	if !ok {
		return fmt.Errorf("disk hot-plug: driver %s: %w", a.cfg.Driver.Name(), hypervisor.ErrUnsupported)
	}
	for _, d := range add {
		if err := hp.AttachDisk(ctx, in.ID, d); err != nil && !errors.Is(err, hypervisor.ErrExists) {
			return fmt.Errorf("attach disk %s: %w", d.Name, err)
		}
		a.log.Info("attached disk", "vm", vm.Key(), "disk", d.Name, "size", d.Size)
	}
	for _, name := range remove {
		if err := hp.DetachDisk(ctx, in.ID, name); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			return fmt.Errorf("detach disk %s: %w", name, err)
		}
		a.log.Info("detached disk", "vm", vm.Key(), "disk", name)
	}
	return nil
}

// pendingResize returns the VM's resize request when it waits for this
// agent's answer and matches the spec.
func pendingResize(vm *model.VM) *model.ResizeOp {
	op := vm.Status.Resize
	if op == nil || op.Phase != model.ResizePending || op.VCPUs != vm.Spec.VCPUs || op.Memory != vm.Spec.Memory {
		return nil
	}
	return op
}

// refuseResize is the answer to a resize the driver cannot make live.
func refuseResize(op *model.ResizeOp, err error) *api.ResizeResult {
	msg := fmt.Sprintf("resize to %d vCPUs / %s refused: %v", op.VCPUs, op.Memory, err)
	if errors.Is(err, hypervisor.ErrNeedsRestart) {
		msg += "; run it again with --restart to restart the VM with the new size"
	}
	return &api.ResizeResult{ID: op.ID, Refused: true, Message: msg}
}
