package ha

import (
	"fmt"
	"sort"

	"github.com/vpool/vpool/internal/model"
)

// HostLoad is what the reserve check needs of a schedulable host: what
// it could still take (capacity under the ratios, less what is
// allocated) and what its protected VMs (HA level not off) demand.
type HostLoad struct {
	Name      string
	Free      model.Resources
	Protected model.Resources
}

// Reserve is the answer of CheckReserve.
type Reserve struct {
	// Tolerates is the number of host failures asked about.
	Tolerates int
	// OK says the protected VMs of any Tolerates hosts fit in what the
	// other hosts have free (vCPUs and memory, in aggregate).
	OK bool
	// Need is what the worst set of hosts would need restarted, Spare
	// what the others would have free then.
	Need, Spare model.Resources
	// Worst names that set.
	Worst []string
}

// CheckReserve answers whether the protected VMs of any n hosts, plus
// add (a VM about to be created, protected or not), could restart on the
// remaining hosts. Losing a set S of hosts loses their free capacity and
// needs their protected demand elsewhere: it fits when
// Σ_{h∈S} (free_h + protected_h) ≤ Σ_all free_h − add, so the worst S is
// the n hosts with the largest free + protected, per resource. It is an
// aggregate check: it does not see fragmentation or placement rules (the
// restart itself checks those).
func CheckReserve(hosts []HostLoad, n int, add model.Resources) Reserve {
	r := Reserve{Tolerates: n, OK: true}
	if n <= 0 {
		return r
	}
	if n >= len(hosts) {
		r.OK = false
		for _, h := range hosts {
			r.Need = plus(r.Need, h.Protected)
			r.Worst = append(r.Worst, h.Name)
		}
		return r
	}
	var total model.Resources
	for _, h := range hosts {
		total = plus(total, h.Free)
	}
	worstCPU := worst(hosts, n, func(h HostLoad) int64 { return int64(h.Free.CPUs + h.Protected.CPUs) })
	worstMem := worst(hosts, n, func(h HostLoad) int64 { return int64(h.Free.Memory + h.Protected.Memory) })
	cpuNeed, cpuSpare := needSpare(hosts, worstCPU, total, add)
	memNeed, memSpare := needSpare(hosts, worstMem, total, add)
	r.Need = model.Resources{CPUs: cpuNeed.CPUs, Memory: memNeed.Memory}
	r.Spare = model.Resources{CPUs: cpuSpare.CPUs, Memory: memSpare.Memory}
	r.OK = r.Need.CPUs <= r.Spare.CPUs && r.Need.Memory <= r.Spare.Memory
	names := map[string]bool{}
	set := worstMem
	if r.Need.CPUs > r.Spare.CPUs {
		set = worstCPU
	}
	for _, i := range set {
		names[hosts[i].Name] = true
	}
	for n := range names {
		r.Worst = append(r.Worst, n)
	}
	sort.Strings(r.Worst)
	return r
}

// Err explains a reserve that does not hold, naming the policy field and
// the ways out; nil when it holds.
func (r Reserve) Err() error {
	if r.OK {
		return nil
	}
	return fmt.Errorf("ha: the cluster could not restart the protected VMs of %d failed hosts (%s): they need %d vCPUs and %s memory, the other hosts would have %d vCPUs and %s free; add hosts, lower ha.tolerateHostFailures in the cluster policy, or create the VM with --ha-priority off",
		r.Tolerates, joinNames(r.Worst), r.Need.CPUs, r.Need.Memory, r.Spare.CPUs, r.Spare.Memory)
}

func joinNames(s []string) string {
	out := ""
	for i, n := range s {
		if i > 0 {
			out += ", "
		}
		out += n
	}
	return out
}

// worst returns the indexes of the n hosts with the largest key.
func worst(hosts []HostLoad, n int, key func(HostLoad) int64) []int {
	idx := make([]int, len(hosts))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return key(hosts[idx[a]]) > key(hosts[idx[b]]) })
	return idx[:n]
}

// needSpare returns what the set needs restarted and what the others
// would have free, less add.
func needSpare(hosts []HostLoad, set []int, total, add model.Resources) (need, spare model.Resources) {
	spare = total
	for _, i := range set {
		need = plus(need, hosts[i].Protected)
		spare = minus(spare, hosts[i].Free)
	}
	return need, minus(spare, add)
}

func plus(a, b model.Resources) model.Resources {
	return model.Resources{CPUs: a.CPUs + b.CPUs, Memory: a.Memory + b.Memory, Disk: a.Disk + b.Disk}
}

func minus(a, b model.Resources) model.Resources {
	return model.Resources{CPUs: a.CPUs - b.CPUs, Memory: a.Memory - b.Memory, Disk: a.Disk - b.Disk}
}
