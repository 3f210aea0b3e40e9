package qemu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

var _ hypervisor.DiskHotplugger = (*Driver)(nil)

// sparePorts is how many empty pcie-root-ports a q35 VM boots with, for
// disks hot-plugged during that boot.
const sparePorts = 4

// diskPorts maps the drives' device ids to their ports.
func diskPorts(drives []Drive) map[string]string {
	out := map[string]string{}
	for _, d := range drives {
		if d.Bus != "" {
			out[d.DeviceID] = d.Bus
		}
	}
	return out
}

// AttachDisk creates an empty thin disk and, on a running VM, plugs it in
// live: blockdev-add of its nodes, then device_add on a free hot-plug
// port. A stopped VM gets it at its next start.
func (d *Driver) AttachDisk(ctx context.Context, id string, sd model.Disk) (err error) {
	defer d.public(&err, "attach disk", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	rec := v.rec
	if !fileNameRe.MatchString(sd.Name) {
		return fmt.Errorf("qemu: attach disk %s: name %q is not a DNS label", id, sd.Name)
	}
	index := 0
	for _, dr := range rec.Disks {
		if dr.Name == sd.Name {
			return fmt.Errorf("qemu: attach disk %s/%s: %w", id, sd.Name, hypervisor.ErrExists)
		}
		index = max(index, dr.Index+1)
	}
	spec := rec.Config.Spec
	spec.Disks = append(append([]model.Disk(nil), spec.Disks...), sd)
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("qemu: attach disk %s/%s: %w", id, sd.Name, err)
	}
	if v.proc != nil && slices.ContainsFunc(rec.Snapshots, func(s snapRec) bool { return s.StateFile != "" }) {
		return fmt.Errorf("qemu: attach disk %s/%s: the VM has memory snapshots, whose device state has no such disk: %w",
			id, sd.Name, hypervisor.ErrBadState)
	}
	rev := &reverter{}
	defer rev.fail()
	dr, err := d.makeDisk(ctx, rec.Config, index, sd, rev)
	if err != nil {
		return fmt.Errorf("qemu: attach disk %s/%s: %w", id, sd.Name, err)
	}
	if sd.Encrypted {
		rev.add(func() { d.keys.DeleteKeys(context.Background(), id) })
	}
	if p := v.proc; p != nil {
		if err := d.plugDisk(ctx, v, p, &dr); err != nil {
			return fmt.Errorf("qemu: attach disk %s/%s: %w", id, sd.Name, err)
		}
	}
	rec.Disks = append(rec.Disks, dr)
	rec.Config.Spec.Disks = spec.Disks
	if err := d.saveRecord(rec); err != nil {
		return err
	}
	rev.success()
	d.log.Info("qemu: disk attached", "vm", id, "disk", sd.Name, "live", v.proc != nil)
	return nil
}

// plugDisk adds dr's block nodes and device to the running QEMU p.
func (d *Driver) plugDisk(ctx context.Context, v *vm, p *process, dr *diskRec) error {
	for _, l := range dr.Layers { // QMP opens them as the VM's user
		if err := d.giveLayer(v.rec, l.File); err != nil {
			return err
		}
	}
	run := v.rec.Run
	if run == nil || len(run.Ports) == 0 {
		return fmt.Errorf("this boot has no hot-plug ports: %w", hypervisor.ErrNeedsRestart)
	}
	used := map[string]bool{}
	for _, port := range run.DiskPorts {
		used[port] = true
	}
	port := ""
	for _, pt := range run.Ports {
		if !used[pt] {
			port = pt
			break
		}
	}
	if port == "" {
		return fmt.Errorf("all %d hot-plug ports of this boot are taken: %w", len(run.Ports), hypervisor.ErrNeedsRestart)
	}
	if dr.Encrypted {
		key, err := d.keys.VolumeKey(ctx, v.rec.Config.ID, dr.Name, false)
		if err != nil {
			return err
		}
		// The key travels over the private QMP socket, never argv or a log.
		if err := p.qmp.ObjectAdd(ctx, qmp.Args{"qom-type": "secret", "id": dr.secretID(),
			"data": base64.StdEncoding.EncodeToString(key), "format": "base64"}); err != nil {
			return err
		}
	}
	layers := dr.driveLayers()
	var added []string
	undo := func() {
		ctx, cancel := d.cleanupCtx()
		defer cancel()
		for i := len(added) - 1; i >= 0; i-- {
			p.qmp.Execute(ctx, "blockdev-del", qmp.Args{"node-name": added[i]}, nil)
		}
		if dr.Encrypted {
			p.qmp.ObjectDel(ctx, dr.secretID())
		}
	}
	for i, l := range layers {
		below := ""
		if i > 0 {
			below = layers[i-1].Node
		}
		for _, js := range []string{l.fileJSON(), l.formatJSON(below, i == 0)} {
			var args qmp.Args
			if err := json.Unmarshal([]byte(js), &args); err != nil {
				undo()
				return err
			}
			if err := p.qmp.Execute(ctx, "blockdev-add", args, nil); err != nil {
				undo()
				return err
			}
			added = append(added, args["node-name"].(string))
		}
	}
	dev := Drive{DeviceID: dr.deviceID(), Serial: truncate(dr.Name, 20), Layers: layers, Bus: port}
	if err := p.qmp.DeviceAdd(ctx, dev.deviceArgs()); err != nil {
		undo()
		return err
	}
	if run.DiskPorts == nil {
		run.DiskPorts = map[string]string{}
	}
	run.DiskPorts[dr.deviceID()] = port
	c := v.rec.Config.Spec.Controls
	if c.DiskBps > 0 || c.DiskIOPS > 0 {
		t := qmp.Throttle{ID: "/machine/peripheral/" + dr.deviceID() + "/virtio-backend", Bps: c.DiskBps, Iops: c.DiskIOPS}
		if err := p.qmp.BlockSetIOThrottle(ctx, t); err != nil {
			d.log.Warn("qemu: throttling a hot-plugged disk", "vm", v.rec.Config.ID, "disk", dr.Name, "err", err)
		}
	}
	return nil
}

// DetachDisk unplugs a disk (the guest must let it go: device_del, then
// the device vanishes from the QOM tree), removes its block nodes and
// deletes its files. The boot disk stays; a VM with snapshots keeps its
// disks (the snapshots hold their layers).
func (d *Driver) DetachDisk(ctx context.Context, id, name string) (err error) {
	defer d.public(&err, "detach disk", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	rec := v.rec
	i := slices.IndexFunc(rec.Disks, func(dr diskRec) bool { return dr.Name == name })
	switch {
	case i < 0:
		return fmt.Errorf("qemu: detach disk %s/%s: %w", id, name, hypervisor.ErrNotFound)
	case rec.Disks[i].Index == 0:
		return fmt.Errorf("qemu: detach disk %s/%s: the boot disk stays with the VM: %w", id, name, hypervisor.ErrBadState)
	case len(rec.Snapshots) > 0:
		return fmt.Errorf("qemu: detach disk %s/%s: the VM has snapshots that hold this disk; delete them first: %w",
			id, name, hypervisor.ErrBadState)
	}
	dr := rec.Disks[i]
	if p := v.proc; p != nil {
		if err := d.unplugDisk(ctx, v, p, &dr); err != nil {
			return fmt.Errorf("qemu: detach disk %s/%s: %w", id, name, err)
		}
	}
	var errs []error
	for _, l := range dr.Layers {
		if err := os.Remove(l.File); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	rec.Disks = slices.Delete(slices.Clone(rec.Disks), i, i+1)
	rec.Config.Spec.Disks = slices.DeleteFunc(slices.Clone(rec.Config.Spec.Disks), func(sd model.Disk) bool { return sd.Name == name })
	if err := d.saveRecord(rec); err != nil {
		return err
	}
	d.log.Info("qemu: disk detached", "vm", id, "disk", name, "live", v.proc != nil)
	return errors.Join(errs...)
}

func (d *Driver) unplugDisk(ctx context.Context, v *vm, p *process, dr *diskRec) error {
	run := v.rec.Run
	if run == nil || run.DiskPorts[dr.deviceID()] == "" {
		return fmt.Errorf("the disk sits on the root bus this boot, which cannot unplug: %w", hypervisor.ErrNeedsRestart)
	}
	if err := d.unplug(ctx, p, dr.deviceID()); err != nil {
		return err
	}
	delete(run.DiskPorts, dr.deviceID())
	layers := dr.driveLayers()
	for i := len(layers) - 1; i >= 0; i-- {
		for _, node := range []string{layers[i].Node, "f" + layers[i].Node} {
			if err := p.qmp.Execute(ctx, "blockdev-del", qmp.Args{"node-name": node}, nil); err != nil && !qmp.IsClass(err, "GenericError") {
				return err
			}
		}
	}
	if dr.Encrypted {
		p.qmp.ObjectDel(ctx, dr.secretID())
	}
	return nil
}
