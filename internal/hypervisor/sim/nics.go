package sim

import (
	"context"
	"fmt"
	"slices"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

var _ hypervisor.NICHotplugger = (*Driver)(nil)

// AttachNIC adds a NIC to the VM's config (live or not: a simulated
// guest takes any NIC).
func (d *Driver) AttachNIC(_ context.Context, id string, nic model.NIC, port hypervisor.NICPort) error {
	h := d.h
	if err := h.fail("attach", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("attach NIC", id)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(v.Config.Spec.NICs, func(n model.NIC) bool { return n.Name == nic.Name }) {
		return fmt.Errorf("sim: attach NIC %s/%s: %w", id, nic.Name, hypervisor.ErrExists)
	}
	for len(v.Config.Ports) < len(v.Config.Spec.NICs) {
		v.Config.Ports = append(v.Config.Ports, hypervisor.NICPort{})
	}
	v.Config.Spec.NICs = append(slices.Clone(v.Config.Spec.NICs), nic)
	v.Config.Ports = append(slices.Clone(v.Config.Ports), port)
	return h.saveLocked()
}

// DetachNIC removes a NIC from the VM's config.
func (d *Driver) DetachNIC(_ context.Context, id, name string) error {
	h := d.h
	if err := h.fail("detach", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("detach NIC", id)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(v.Config.Spec.NICs, func(n model.NIC) bool { return n.Name == name })
	if i < 0 {
		return fmt.Errorf("sim: detach NIC %s/%s: %w", id, name, hypervisor.ErrNotFound)
	}
	v.Config.Spec.NICs = slices.Delete(slices.Clone(v.Config.Spec.NICs), i, i+1)
	if i < len(v.Config.Ports) {
		v.Config.Ports = slices.Delete(slices.Clone(v.Config.Ports), i, i+1)
	}
	return h.saveLocked()
}
