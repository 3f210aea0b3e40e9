package controller

import (
	"maps"
	"sort"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// cloneAlloc returns a deep copy of a so that callers may change it.
func cloneAlloc(a model.Allocation) model.Allocation {
	a.VMs = maps.Clone(a.VMs)
	a.Domains = maps.Clone(a.Domains)
	a.Groups = maps.Clone(a.Groups)
	return a
}

// allocAdd returns a copy of a with vm added (state.AllocAdd: adding a VM
// already counted is a no-op, so a retried commit never counts it twice).
func allocAdd(a model.Allocation, host string, vm *model.VM) model.Allocation {
	a = cloneAlloc(a)
	a.Host = host
	state.AllocAdd(&a, vm)
	return a
}

// expectedAllocs recomputes every host's allocation from the VMs, the
// source of truth: a VM counts on Status.Host until its record is gone.
func expectedAllocs(vms []*model.VM) map[string]model.Allocation {
	out := map[string]model.Allocation{}
	for _, vm := range vms {
		h := vm.Status.Host
		if h == "" {
			continue
		}
		out[h] = allocAdd(out[h], h, vm)
	}
	return out
}

// sameAlloc reports whether two allocations count the same things
// (revisions and timestamps aside).
func sameAlloc(a, b model.Allocation) bool {
	return a.Used == b.Used && a.Reserved == b.Reserved && a.ReservedCPUMilli == b.ReservedCPUMilli &&
		sameBoolSet(a.VMs, b.VMs) && sameCounts(a.Domains, b.Domains) && sameCounts(a.Groups, b.Groups)
}

func sameBoolSet(a, b map[string]bool) bool {
	n := 0
	for k, v := range a {
		if !v {
			continue
		}
		n++
		if !b[k] {
			return false
		}
	}
	for _, v := range b {
		if v {
			n--
		}
	}
	return n == 0
}

func sameCounts(a, b map[string]int) bool {
	for k, v := range a {
		if v != 0 && b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if v != 0 && a[k] != v {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
