package scheduler

import "github.com/vpool/vpool/internal/model"

// setCapacity loads a host's physical capacity and its limits (capacity ×
// the effective ratio) into r, less the reserve of the load balancers
// the host serves.
func (r *hostRec) setCapacity(h *model.Host, policy model.Policy) {
	rt := EffectiveRatios(h, policy)
	cpu, mem := int64(h.Capacity.CPUs)*1000, int64(h.Capacity.Memory)
	// The load balancers the host serves take their reserve off the top:
	// it is real use, neither overcommitted nor available to reservations.
	lbCPU, lbMem := int64(h.Balancers)*model.LBReserveCPUMilli, int64(h.Balancers)*int64(model.LBReserveMemory)
	r.cpuPhys, r.memPhys = max(cpu-lbCPU, 0), max(mem-lbMem, 0)
	r.cpuLimit = max(scale(cpu, rt.CPU)-lbCPU, 0)
	r.memLimit = max(scale(mem, rt.Memory)-lbMem, 0)
	r.diskLimit = scale(int64(h.Capacity.Disk), rt.Disk)
	r.cores = int32(h.Capacity.CPUs)
}

// setUsage loads what an allocation record holds into r.
func (r *hostRec) setUsage(a *model.Allocation) {
	r.cpuUsed, r.memUsed, r.diskUsed = int64(a.Used.CPUs)*1000, int64(a.Used.Memory), int64(a.Used.Disk)
	r.cpuRes = int64(a.ReservedCPUMilli)
	if r.cpuRes == 0 {
		r.cpuRes = int64(a.Reserved.CPUs) * 1000
	}
	r.memRes = int64(a.Reserved.Memory)
	r.vms = int32(len(a.VMs))
}

// EffectiveRatios resolves a host's allocation ratios: the host's
// override, else the policy's, else the model defaults (4.0 / 1.0 /
// 1.0), each capped at what policy validation allows (CPU 64, memory 3,
// disk 20).
func EffectiveRatios(h *model.Host, p model.Policy) model.Ratios {
	def := model.DefaultPolicy().Ratios
	return model.Ratios{
		CPU:    ratio(h.Ratios.CPU, p.Ratios.CPU, def.CPU, maxCPURatio),
		Memory: ratio(h.Ratios.Memory, p.Ratios.Memory, def.Memory, maxMemRatio),
		Disk:   ratio(h.Ratios.Disk, p.Ratios.Disk, def.Disk, maxDiskRatio),
	}
}

// Allocatable is what may be allocated on a host: capacity × its
// effective ratios (whole vCPUs, rounded down).
func Allocatable(h *model.Host, p model.Policy) model.Resources {
	var r hostRec
	r.setCapacity(h, p)
	return model.Resources{CPUs: int(r.cpuLimit / 1000), Memory: model.Bytes(r.memLimit), Disk: model.Bytes(r.diskLimit)}
}

// Fits says why a VM with spec does not fit on host h holding allocation
// a under policy p, or "" when it does: the fit plugin's own rule (used +
// demand within capacity × ratio; reservations within what the
// reservations already there leave of the physical capacity) and words.
// A nil spec checks the allocation alone. It serves the callers that hold
// no Snapshot; the placement gate runs every filter instead.
func Fits(h *model.Host, a model.Allocation, p model.Policy, spec *model.VMSpec) string {
	var r hostRec
	r.setCapacity(h, p)
	r.setUsage(&a)
	var d demand
	if spec != nil {
		d = demand{cpu: int64(spec.VCPUs) * 1000, mem: int64(spec.Memory), disk: int64(spec.DiskSize()),
			cpuRes: int64(spec.Controls.CPUReservation), memRes: int64(spec.Controls.MemoryReservation)}
	}
	st := fit(&r, &d)
	switch {
	case st.Code == Success && spec == nil && r.memRes > r.memPhys:
		st = reject(reasonMemReservation, r.memPhys-r.memRes)
	case st.Code == Success && spec == nil && r.cpuRes > r.cpuPhys:
		st = reject(reasonCPUReservation, r.cpuPhys-r.cpuRes)
	case st.Code == Success:
		return ""
	}
	return Fit{}.Explain(&Cycle{d: d}, st.Reason, st.Value)
}
