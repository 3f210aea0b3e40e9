package ha

import (
	"fmt"
	"sort"

	"github.com/vpool/vpool/internal/model"
)

// Level resolves a VM's HA level on the pools of the host it runs on:
// its spec's level, else medium when every disk is on a shared pool (a
// disk without a pool is on the host's first pool), else off. why says
// why a VM cannot restart elsewhere ("" when it can).
func Level(spec *model.VMSpec, pools []model.StoragePoolRef) (level, why string) {
	local := localDisk(spec, pools)
	switch {
	case spec.HA == model.HAOff:
		return model.HAOff, "HA is off for this VM"
	case local != "":
		return model.HAOff, fmt.Sprintf("disk %s is on local storage: it cannot restart on another host", local)
	case spec.HA == "":
		return model.HAMedium, ""
	}
	return spec.HA, ""
}

// localDisk names the first disk not on a shared pool of pools.
func localDisk(spec *model.VMSpec, pools []model.StoragePoolRef) string {
	for _, d := range spec.Disks {
		pool := d.Pool
		if pool == "" && len(pools) > 0 {
			pool = pools[0].Name
		}
		shared := false
		for _, p := range pools {
			if p.Name == pool {
				shared = p.Shared
				break
			}
		}
		if !shared {
			return d.Name
		}
	}
	return ""
}

// rank orders levels: high first.
func rank(level string) int {
	switch level {
	case model.HAHigh:
		return 0
	case model.HAMedium:
		return 1
	case model.HALow:
		return 2
	}
	return 3
}

// VM is a VM of a fenced host.
type VM struct {
	Key  string
	Host string // the fenced host it was on
	Spec *model.VMSpec
	// Pools are its host's pools (for Level).
	Pools []model.StoragePoolRef
}

// Placer is what PlanRestarts asks where a VM may go; the controller
// serves it with the scheduler over a snapshot of the cluster, so every
// placement rule holds (the gate checks each restart again).
type Placer interface {
	// Place picks a host for the VM, lifted off the host it was on, or
	// says why none fits.
	Place(vm VM) (host, why string)
	// Assume books the VM on host for the decisions that follow.
	Assume(vm VM, host string)
}

// Restart is one VM to restart on another host.
type Restart struct {
	VM, From, To string
	Level        string
}

// Stuck is a VM that stays failed, and why.
type Stuck struct {
	VM, Host, Reason string
}

// Plan is what PlanRestarts decided.
type Plan struct {
	Restarts []Restart
	Stuck    []Stuck
}

// PlanRestarts decides the restarts of the VMs of fenced hosts: by
// level (high, medium, low), then HAPriority (higher first), then key,
// each placed by p seeing the ones before it. VMs whose level is off,
// and VMs that fit nowhere, are returned as stuck with the reason.
func PlanRestarts(vms []VM, p Placer) Plan {
	type item struct {
		vm    VM
		level string
	}
	var plan Plan
	items := make([]item, 0, len(vms))
	for _, v := range vms {
		level, why := Level(v.Spec, v.Pools)
		if level == model.HAOff {
			plan.Stuck = append(plan.Stuck, Stuck{v.Key, v.Host, why})
			continue
		}
		items = append(items, item{v, level})
	}
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if rank(a.level) != rank(b.level) {
			return rank(a.level) < rank(b.level)
		}
		if a.vm.Spec.HAPriority != b.vm.Spec.HAPriority {
			return a.vm.Spec.HAPriority > b.vm.Spec.HAPriority
		}
		return a.vm.Key < b.vm.Key
	})
	for _, it := range items {
		host, why := p.Place(it.vm)
		if host == "" {
			plan.Stuck = append(plan.Stuck, Stuck{it.vm.Key, it.vm.Host, "no host fits: " + why})
			continue
		}
		p.Assume(it.vm, host)
		plan.Restarts = append(plan.Restarts, Restart{VM: it.vm.Key, From: it.vm.Host, To: host, Level: it.level})
	}
	sort.Slice(plan.Stuck, func(i, j int) bool { return plan.Stuck[i].VM < plan.Stuck[j].VM })
	return plan
}
