package qemu

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// dimmBlock is the granularity of memory hot-add: Linux onlines memory
// in 128 MiB blocks on x86-64.
const dimmBlock = 128 * model.MiB

// SetControls records c and, on a running VM, applies it: CPU shares and
// limit and the memory limit through cgroups, disk IOPS and bytes/s
// through QMP block throttling on every disk.
func (d *Driver) SetControls(ctx context.Context, id string, c model.Controls) (err error) {
	defer d.public(&err, "set controls", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	spec := v.rec.Config.Spec
	spec.Controls = c
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("qemu: controls of %s: %w", id, err)
	}
	old := v.rec.Config.Spec.Controls
	v.rec.Config.Spec.Controls = c
	if v.proc != nil {
		if err := d.applyControls(ctx, v.rec, v.proc); err != nil {
			v.rec.Config.Spec.Controls = old
			d.applyControls(ctx, v.rec, v.proc)
			return fmt.Errorf("qemu: controls of %s: %w", id, err)
		}
	}
	return d.saveRecord(v.rec)
}

func (d *Driver) applyControls(ctx context.Context, rec *record, p *process) error {
	c := rec.Config.Spec.Controls
	if d.cg != nil {
		if err := d.cg.apply(rec.Config.ID, d.processControls(c)); err != nil {
			return err
		}
	}
	for _, dr := range rec.Disks {
		t := qmp.Throttle{ID: "/machine/peripheral/" + dr.deviceID() + "/virtio-backend", Bps: c.DiskBps, Iops: c.DiskIOPS}
		if err := p.qmp.BlockSetIOThrottle(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

// Resize changes vCPUs and memory. A stopped VM takes any size at its next
// start. A running VM grows vCPUs by hot-add up to its maxcpus and shrinks
// by unplugging hot-added ones; memory shrinks and regrows through the
// balloon, and grows past boot memory by DIMM hot-add in 128 MiB blocks.
// Anything else returns ErrNeedsRestart and changes nothing.
func (d *Driver) Resize(ctx context.Context, id string, vcpus int, memory model.Bytes) (err error) {
	defer d.public(&err, "resize", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	spec := v.rec.Config.Spec
	spec.VCPUs, spec.Memory = vcpus, memory
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("qemu: resize %s: %w", id, err)
	}
	if v.proc == nil {
		v.rec.Config.Spec.VCPUs, v.rec.Config.Spec.Memory = vcpus, memory
		return d.saveRecord(v.rec)
	}
	run := v.rec.Run
	cur := v.rec.Config.Spec
	if err := d.checkLiveResize(run, cur, vcpus, memory); err != nil {
		return fmt.Errorf("qemu: resize %s: %w", id, err)
	}
	if err := d.admit(v, memory); err != nil {
		return err
	}
	p := v.proc
	if err := d.resizeCPUs(ctx, p, run, cur.VCPUs, vcpus); err != nil {
		d.saveRecord(v.rec)
		return fmt.Errorf("qemu: resize %s: %w", id, err)
	}
	v.rec.Config.Spec.VCPUs = vcpus
	if err := d.resizeMemory(ctx, p, run, memory); err != nil {
		d.saveRecord(v.rec)
		return fmt.Errorf("qemu: resize %s: %w", id, err)
	}
	v.rec.Config.Spec.Memory = memory
	return d.saveRecord(v.rec)
}

// checkLiveResize says whether the running VM can take the new size live.
func (d *Driver) checkLiveResize(run *runRec, cur model.VMSpec, vcpus int, memory model.Bytes) error {
	if vcpus > run.MaxVCPUs {
		return fmt.Errorf("%d vCPUs is above the %d this boot allows: %w", vcpus, run.MaxVCPUs, hypervisor.ErrNeedsRestart)
	}
	if vcpus < run.BootVCPUs {
		return fmt.Errorf("boot vCPUs cannot be unplugged (%d < %d): %w", vcpus, run.BootVCPUs, hypervisor.ErrNeedsRestart)
	}
	plugged := model.Bytes(run.BootMemory)
	for _, dm := range run.DIMMs {
		plugged += model.Bytes(dm.Size)
	}
	if memory <= plugged {
		return nil // the balloon covers it
	}
	grow := memory - plugged
	switch {
	case run.MemSlots == 0 || run.MaxMemory <= run.BootMemory:
		return fmt.Errorf("memory hot-add is off for this boot: %w", hypervisor.ErrNeedsRestart)
	case grow%dimmBlock != 0:
		return fmt.Errorf("memory can grow live only in %s steps past %s: %w", dimmBlock, plugged, hypervisor.ErrNeedsRestart)
	case int64(memory) > run.MaxMemory:
		return fmt.Errorf("%s is above the %s this boot allows: %w", memory, model.Bytes(run.MaxMemory), hypervisor.ErrNeedsRestart)
	case len(run.DIMMs) >= run.MemSlots:
		return fmt.Errorf("all %d memory slots are used: %w", run.MemSlots, hypervisor.ErrNeedsRestart)
	}
	return nil
}

func (d *Driver) resizeCPUs(ctx context.Context, p *process, run *runRec, from, to int) error {
	for n := from; n < to; n++ {
		slots, err := p.qmp.QueryHotpluggableCPUs(ctx)
		if err != nil {
			return err
		}
		var free *qmp.HotpluggableCPU
		for i := range slots {
			if slots[i].QOMPath == "" {
				free = &slots[i]
				break
			}
		}
		if free == nil {
			return fmt.Errorf("no free vCPU slot: %w", hypervisor.ErrNeedsRestart)
		}
		devID := fmt.Sprintf("cpu%d", n)
		args := qmp.Args{"driver": free.Type, "id": devID}
		for k, val := range free.Props {
			args[k] = val
		}
		if err := p.qmp.DeviceAdd(ctx, args); err != nil {
			return err
		}
		run.HotCPUs = append(run.HotCPUs, devID)
	}
	for n := from; n > to; n-- {
		devID := run.HotCPUs[len(run.HotCPUs)-1]
		if err := d.unplug(ctx, p, devID); err != nil {
			return err
		}
		run.HotCPUs = run.HotCPUs[:len(run.HotCPUs)-1]
	}
	return nil
}

// unplug removes a device and waits for the guest to let it go. It polls
// the QOM tree rather than waiting for DEVICE_DELETED, which QEMU 7.2
// sends for a CPU's lapic child but not for the CPU itself.
func (d *Driver) unplug(ctx context.Context, p *process, devID string) error {
	if err := p.qmp.DeviceDel(ctx, devID); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		var props []struct {
			Name string `json:"name"`
		}
		if err := p.qmp.Execute(wctx, "qom-list", qmp.Args{"path": "/machine/peripheral"}, &props); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("the guest did not release %s", devID)
			}
			return err
		}
		if !slices.ContainsFunc(props, func(p struct {
			Name string `json:"name"`
		}) bool {
			return p.Name == devID
		}) {
			return nil
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("the guest did not release %s", devID)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (d *Driver) resizeMemory(ctx context.Context, p *process, run *runRec, memory model.Bytes) error {
	plugged := model.Bytes(run.BootMemory)
	for _, dm := range run.DIMMs {
		plugged += model.Bytes(dm.Size)
	}
	if memory > plugged {
		grow := int64(memory - plugged)
		n := len(run.DIMMs)
		memID, devID := fmt.Sprintf("mem-dimm%d", n), fmt.Sprintf("dimm%d", n)
		if err := p.qmp.ObjectAdd(ctx, qmp.Args{"qom-type": "memory-backend-ram", "id": memID, "size": grow}); err != nil {
			return err
		}
		if err := p.qmp.DeviceAdd(ctx, qmp.Args{"driver": "pc-dimm", "id": devID, "memdev": memID}); err != nil {
			p.qmp.ObjectDel(ctx, memID)
			return err
		}
		run.DIMMs = append(run.DIMMs, dimmRec{ID: devID, Size: grow})
	}
	return p.qmp.Balloon(ctx, int64(memory))
}

// processControls turns a VM's controls into its QEMU process's: memory
// limits and reservations are about guest memory (a limit is at least the
// VM's size), while the cgroup holds the whole process, which needs
// VMOverhead beyond the guest (the TCG translation cache, QEMU itself). A
// limit of exactly the guest's size would otherwise be refused (cgroup v1:
// EBUSY) or kill QEMU (v2: OOM).
func (d *Driver) processControls(c model.Controls) model.Controls {
	if c.MemoryLimit > 0 {
		c.MemoryLimit += d.cfg.VMOverhead
	}
	if c.MemoryReservation > 0 {
		c.MemoryReservation += d.cfg.VMOverhead
	}
	return c
}
