package model

import "strings"

// ApplyVM adds (sign 1) or removes (sign -1) one VM to or from the
// allocation record: used resources (the spec's Demand), reservations
// (ReservedCPUMilli exactly, Reserved.CPUs the same rounded up,
// Reserved.Memory), the VM key, its isolation domain (cluster-wide names)
// and its affinity group (keyed "project/group": groups are scoped to
// the project). It is the one definition of what a VM holds on its host:
// the stored allocations (internal/state) and the placement engine
// (internal/scheduler) both read allocations in this shape.
func (a *Allocation) ApplyVM(key string, spec *VMSpec, sign int) {
	dm := spec.Demand()
	a.Used.CPUs += sign * dm.CPUs
	a.Used.Memory += Bytes(sign) * dm.Memory
	a.Used.Disk += Bytes(sign) * dm.Disk
	a.ReservedCPUMilli += sign * spec.Controls.CPUReservation
	a.Reserved.CPUs = (a.ReservedCPUMilli + 999) / 1000
	a.Reserved.Memory += Bytes(sign) * spec.Controls.MemoryReservation
	if a.VMs == nil {
		a.VMs = map[string]bool{}
	}
	if sign > 0 {
		a.VMs[key] = true
	} else {
		delete(a.VMs, key)
	}
	p := &spec.Placement
	if p.IsolationDomain != "" {
		a.Domains = bumpCount(a.Domains, p.IsolationDomain, sign)
	}
	if p.AffinityGroup != "" {
		project, _, _ := strings.Cut(key, "/")
		a.Groups = bumpCount(a.Groups, project+"/"+p.AffinityGroup, sign)
	}
}

// AddVM records that the VM key (project/name) with spec holds its
// demand here. Adding a VM already present does nothing, so a retried
// write never counts it twice.
func (a *Allocation) AddVM(key string, spec *VMSpec) {
	if a.VMs[key] {
		return
	}
	a.ApplyVM(key, spec, 1)
}

// ReleaseVM removes the VM key (the inverse of AddVM for the same spec).
// Releasing a VM that is not present does nothing; an allocation left
// without VMs is zeroed, so no rounding drift survives an empty host.
func (a *Allocation) ReleaseVM(key string, spec *VMSpec) {
	if !a.VMs[key] {
		return
	}
	a.ApplyVM(key, spec, -1)
	if len(a.VMs) == 0 {
		a.Used, a.Reserved, a.ReservedCPUMilli = Resources{}, Resources{}, 0
		a.Domains, a.Groups = nil, nil
	}
}

func bumpCount(m map[string]int, k string, n int) map[string]int {
	if m == nil {
		m = map[string]int{}
	}
	if m[k] += n; m[k] <= 0 {
		delete(m, k)
	}
	return m
}
