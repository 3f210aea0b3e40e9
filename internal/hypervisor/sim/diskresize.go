package sim

import (
	"context"
	"fmt"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

var _ hypervisor.DiskResizer = (*Driver)(nil)

// ResizeDisk grows a disk; the growth counts against the host's disk.
func (d *Driver) ResizeDisk(_ context.Context, id, name string, size model.Bytes) error {
	h := d.h
	if err := h.fail("resize disk", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("resize disk", id)
	if err != nil {
		return err
	}
	disks := append([]model.Disk(nil), v.Config.Spec.Disks...)
	for i := range disks {
		if disks[i].Name != name {
			continue
		}
		if size < disks[i].Size {
			return fmt.Errorf("sim: resize disk %s/%s: shrinking from %s to %s: %w", id, name, disks[i].Size, size, hypervisor.ErrUnsupported)
		}
		want := model.Resources{Disk: v.Config.Spec.DiskSize() + size - disks[i].Size}
		if err := h.fitsLocked(id, want); err != nil {
			return err
		}
		disks[i].Size = size
		v.Config.Spec.Disks = disks
		return h.saveLocked()
	}
	return fmt.Errorf("sim: resize disk %s/%s: %w", id, name, hypervisor.ErrNotFound)
}
