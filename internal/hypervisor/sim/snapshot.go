package sim

import (
	"context"
	"fmt"

	"github.com/vpool/vpool/internal/hypervisor"
)

// Snapshot records a snapshot. With memory it captures the run state and
// needs a running or paused VM; without, it is a disk snapshot of any VM.
func (d *Driver) Snapshot(_ context.Context, id, name string, withMemory bool) error {
	h := d.h
	if err := h.fail("snapshot", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("snapshot", id)
	if err != nil {
		return err
	}
	if name == "" {
		return fmt.Errorf("sim: snapshot %s: empty name", id)
	}
	for _, s := range v.Snapshots {
		if s.Name == name {
			return fmt.Errorf("sim: snapshot %q of %s already exists: %w", name, id, hypervisor.ErrExists)
		}
	}
	if withMemory && v.State != hypervisor.StateRunning && v.State != hypervisor.StatePaused {
		return fmt.Errorf("sim: snapshot %s: a memory snapshot needs a running vm (it is %s): %w", id, v.State, hypervisor.ErrBadState)
	}
	v.Snapshots = append(v.Snapshots, snapshot{Name: name, CreatedAt: h.cfg.Clock.Now(), Memory: withMemory, State: v.State})
	return h.saveLocked()
}

// RevertSnapshot goes back to a snapshot. A memory snapshot restores the
// run state it captured (starting the VM if needed); a disk snapshot needs
// the VM stopped.
func (d *Driver) RevertSnapshot(_ context.Context, id, name string) error {
	h := d.h
	if err := h.fail("revert", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("revert", id)
	if err != nil {
		return err
	}
	i := findSnapshot(v, name)
	if i < 0 {
		return fmt.Errorf("sim: revert %s to %q: %w", id, name, hypervisor.ErrSnapshotFound)
	}
	s := v.Snapshots[i]
	live := v.State == hypervisor.StateRunning || v.State == hypervisor.StatePaused
	if !s.Memory {
		if live {
			return fmt.Errorf("sim: revert %s to disk snapshot %q: stop the vm first: %w", id, name, hypervisor.ErrBadState)
		}
		return h.saveLocked()
	}
	now := h.cfg.Clock.Now()
	if !live {
		if err := h.fitsLocked(id, v.Config.Spec.Demand()); err != nil {
			return err
		}
		h.startLocked(v, now)
	}
	h.touch(v, now)
	v.State = s.State
	return h.saveLocked()
}

// DeleteSnapshot removes a snapshot.
func (d *Driver) DeleteSnapshot(_ context.Context, id, name string) error {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("delete snapshot", id)
	if err != nil {
		return err
	}
	i := findSnapshot(v, name)
	if i < 0 {
		return fmt.Errorf("sim: delete snapshot %q of %s: %w", name, id, hypervisor.ErrSnapshotFound)
	}
	v.Snapshots = append(v.Snapshots[:i], v.Snapshots[i+1:]...)
	return h.saveLocked()
}

// Snapshots lists a VM's snapshots, oldest first.
func (d *Driver) Snapshots(_ context.Context, id string) ([]hypervisor.SnapshotInfo, error) {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("snapshots", id)
	if err != nil {
		return nil, err
	}
	out := make([]hypervisor.SnapshotInfo, 0, len(v.Snapshots))
	for _, s := range v.Snapshots {
		out = append(out, hypervisor.SnapshotInfo{Name: s.Name, CreatedAt: s.CreatedAt, Memory: s.Memory})
	}
	return out, nil
}

func findSnapshot(v *vm, name string) int {
	for i, s := range v.Snapshots {
		if s.Name == name {
			return i
		}
	}
	return -1
}
