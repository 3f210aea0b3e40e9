package ha

import (
	"sort"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
)

// Loads returns the reserve check's view of the schedulable hosts (ready
// and not cordoned): what each could still take under the policy's
// ratios, and what its protected VMs demand.
func Loads(pol model.Policy, hosts []*model.Host, allocs map[string]*model.Allocation, vms []*model.VM) []HostLoad {
	byHost := map[string]*model.Host{}
	for _, h := range hosts {
		byHost[h.Name] = h
	}
	prot := map[string]model.Resources{}
	for _, v := range vms {
		h := byHost[v.Status.Host]
		if h == nil || v.DeletedAt != nil {
			continue
		}
		if level, _ := Level(&v.Spec, h.Pools); level != model.HAOff {
			prot[h.Name] = plus(prot[h.Name], v.Spec.Demand())
		}
	}
	var out []HostLoad
	for _, h := range hosts {
		if h.State != model.HostReady || h.Cordoned {
			continue
		}
		var used model.Resources
		if a := allocs[h.Name]; a != nil {
			used = a.Used
		}
		free := minus(scheduler.Allocatable(h, pol), used)
		free.CPUs, free.Memory = max(free.CPUs, 0), max(free.Memory, 0)
		out = append(out, HostLoad{Name: h.Name, Free: free, Protected: prot[h.Name]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Pending is the demand (vCPUs and memory) of the VMs asked to run that
// no host holds yet: they take free capacity when they are placed, so
// the reserve check counts them as already added.
func Pending(vms []*model.VM) model.Resources {
	var r model.Resources
	for _, v := range vms {
		if v.DeletedAt != nil || v.Status.Host != "" || v.Spec.Power != model.PowerRunning {
			continue
		}
		d := v.Spec.Demand()
		r.CPUs, r.Memory = r.CPUs+d.CPUs, r.Memory+d.Memory
	}
	return r
}
