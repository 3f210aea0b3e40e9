package qemu

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

var _ hypervisor.NICHotplugger = (*Driver)(nil)

// AttachNIC adds a NIC. On a running VM it makes the tap, adds the tap
// netdev (netdev_add) and a virtio-net device on a free hot-plug port
// (q35's root bus cannot hot-plug); on a stopped one it only records the
// NIC, which is there at the next start. No free port (or a boot without
// ports) answers ErrNeedsRestart and changes nothing.
func (d *Driver) AttachNIC(ctx context.Context, id string, nic model.NIC, port hypervisor.NICPort) error {
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	rec := v.rec
	if slices.ContainsFunc(rec.NICs, func(n nicRec) bool { return n.Name != "" && n.Name == nic.Name }) {
		return fmt.Errorf("qemu: attach NIC %s/%s: %w", id, nic.Name, hypervisor.ErrExists)
	}
	idx := 0
	for _, n := range rec.NICs {
		if k, err := strconv.Atoi(n.ID[len("net"):]); err == nil {
			idx = max(idx, k+1)
		}
	}
	n := nicRec{ID: "net" + strconv.Itoa(idx), MAC: nic.MAC, Name: nic.Name}
	if n.MAC == "" {
		n.MAC = macFor(id, idx)
	}
	if port.Bridge != "" {
		p := port
		n.Port = &p
	}
	if p := v.proc; p != nil {
		if err := d.plugNIC(ctx, v, p, idx, &n); err != nil {
			return fmt.Errorf("qemu: attach NIC %s/%s: %w", id, nic.Name, err)
		}
	}
	rec.NICs = append(rec.NICs, n)
	rec.Config.Spec.NICs = append(slices.Clone(rec.Config.Spec.NICs), nic)
	if len(rec.Config.Ports) > 0 || port.Bridge != "" {
		for len(rec.Config.Ports) < len(rec.Config.Spec.NICs)-1 {
			rec.Config.Ports = append(rec.Config.Ports, hypervisor.NICPort{})
		}
		rec.Config.Ports = append(slices.Clone(rec.Config.Ports), port)
	}
	if err := d.saveRecord(rec); err != nil {
		return err
	}
	d.log.Info("qemu: NIC attached", "vm", id, "nic", nic.Name, "live", v.proc != nil)
	return nil
}

// plugNIC plugs n into the running QEMU p on a free hot-plug port.
func (d *Driver) plugNIC(ctx context.Context, v *vm, p *process, idx int, n *nicRec) error {
	run := v.rec.Run
	if run == nil || len(run.Ports) == 0 {
		return fmt.Errorf("this boot has no hot-plug ports: %w", hypervisor.ErrNeedsRestart)
	}
	used := map[string]bool{}
	for _, pt := range run.DiskPorts { // disks and NICs share the ports
		used[pt] = true
	}
	free := ""
	for _, pt := range run.Ports {
		if !used[pt] {
			free = pt
			break
		}
	}
	if free == "" {
		return fmt.Errorf("all %d hot-plug ports of this boot are taken: %w", len(run.Ports), hypervisor.ErrNeedsRestart)
	}
	netdev := qmp.Args{"type": "user", "id": "n" + n.ID}
	if d.net == NetBridge {
		tap, err := d.plugTap(ctx, v.rec, idx, n)
		if err != nil {
			return err
		}
		n.Tap = tap
		netdev = qmp.Args{"type": "tap", "id": "n" + n.ID, "ifname": tap, "script": "no", "downscript": "no"}
		if d.users != nil { // QEMU, as the VM's user, gets the open tap (vmuser.go)
			f, err := openTap(tap)
			if err == nil {
				err = p.qmp.Getfd(ctx, "tap-"+n.ID, f)
				f.Close()
			}
			if err != nil {
				d.removeTap(tap)
				n.Tap = ""
				return err
			}
			netdev = qmp.Args{"type": "tap", "id": "n" + n.ID, "fd": "tap-" + n.ID}
		}
	}
	undoTap := func() {
		d.removeTap(n.Tap)
		n.Tap = ""
	}
	if err := p.qmp.Execute(ctx, "netdev_add", netdev, nil); err != nil {
		undoTap()
		return err
	}
	dev := qmp.Args{"driver": "virtio-net-pci", "id": n.ID, "netdev": "n" + n.ID, "mac": n.MAC, "bus": free}
	if mtu := hostMTU(n); mtu > 0 && n.Tap != "" {
		dev["host_mtu"] = mtu
	}
	if err := p.qmp.DeviceAdd(ctx, dev); err != nil {
		p.qmp.Execute(context.Background(), "netdev_del", qmp.Args{"id": "n" + n.ID}, nil)
		undoTap()
		return err
	}
	if run.DiskPorts == nil {
		run.DiskPorts = map[string]string{}
	}
	run.DiskPorts[n.ID] = free
	return nil
}

// DetachNIC unplugs a NIC (device_del; the guest must release it), drops
// its netdev and tap. A NIC on the root bus of this boot cannot be
// unplugged: ErrNeedsRestart, nothing changes.
func (d *Driver) DetachNIC(ctx context.Context, id, name string) error {
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	rec := v.rec
	i := slices.IndexFunc(rec.NICs, func(n nicRec) bool { return n.Name == name })
	if i < 0 {
		return fmt.Errorf("qemu: detach NIC %s/%s: %w", id, name, hypervisor.ErrNotFound)
	}
	n := rec.NICs[i]
	if p := v.proc; p != nil {
		run := rec.Run
		if run == nil || run.DiskPorts[n.ID] == "" {
			return fmt.Errorf("qemu: detach NIC %s/%s: the NIC sits on the root bus this boot, which cannot unplug: %w", id, name, hypervisor.ErrNeedsRestart)
		}
		if err := d.unplug(ctx, p, n.ID); err != nil {
			return fmt.Errorf("qemu: detach NIC %s/%s: %w", id, name, err)
		}
		delete(run.DiskPorts, n.ID)
		if err := p.qmp.Execute(ctx, "netdev_del", qmp.Args{"id": "n" + n.ID}, nil); err != nil && !qmp.IsClass(err, "GenericError") {
			return fmt.Errorf("qemu: detach NIC %s/%s: %w", id, name, err)
		}
		d.removeTap(n.Tap)
	}
	rec.NICs = slices.Delete(slices.Clone(rec.NICs), i, i+1)
	if j := slices.IndexFunc(rec.Config.Spec.NICs, func(sn model.NIC) bool { return sn.Name == name }); j >= 0 {
		rec.Config.Spec.NICs = slices.Delete(slices.Clone(rec.Config.Spec.NICs), j, j+1)
		if j < len(rec.Config.Ports) {
			rec.Config.Ports = slices.Delete(slices.Clone(rec.Config.Ports), j, j+1)
		}
	}
	if err := d.saveRecord(rec); err != nil {
		return err
	}
	d.log.Info("qemu: NIC detached", "vm", id, "nic", name, "live", v.proc != nil)
	return nil
}
