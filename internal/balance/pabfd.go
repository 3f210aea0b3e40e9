package balance

import (
	"math"
	"sort"
)

// excluder says which hosts a placement may not use.
type excluder struct {
	mark []bool
	// switchedOff excludes hosts whose measured utilisation is zero.
	switchedOff bool
}

func newExcluder(n int) *excluder { return &excluder{mark: make([]bool, n)} }

func (e *excluder) excluded(st *state, hi int) bool {
	H := &st.s.Hosts[hi]
	return e.mark[hi] || H.Maintenance || (e.switchedOff && H.Util == 0)
}

// suitable reports whether VM v fits host hi's free CPU (and memory when
// it counts) — CloudSim's Host.isSuitableForVm — and the snapshot's
// placement rules allow it there.
func (st *state) suitable(hi, v int) bool {
	H := &st.s.Hosts[hi]
	ph := &st.h[hi]
	vm := &st.s.VMs[v]
	if H.PEMIPS < vm.Demand || ph.avail < vm.Demand {
		return false
	}
	if st.s.MemoryCounts && H.MemMB-ph.memUsed < vm.MemMB {
		return false
	}
	return st.feasible(v, hi)
}

// overloadedAfter is CloudSim's isHostOverUtilizedAfterAllocation.
func (st *state) overloadedAfter(det Detector, hi, v int) bool {
	if m := st.s.Hosts[hi].MaxVMs; m > 0 && len(st.h[hi].vms) >= m {
		return true
	}
	return det.overloaded(st, hi, v)
}

// powerAfter is the host's draw with VM v added.
func (st *state) powerAfter(hi, v int) float64 {
	H := &st.s.Hosts[hi]
	u := (st.h[hi].sumAlloc + st.s.VMs[v].Demand) / H.MIPS
	return H.Power.Power(clampUtil(u))
}

// pabfd is the power-aware best fit decreasing choice for one VM: among
// hosts that fit and stay below the detector's limit, the one whose power
// grows least (measured against its draw at the last update). Ties go to
// the lowest host index. It returns -1 when no host fits.
func (st *state) pabfd(det Detector, v int, ex *excluder) int {
	best, bestDiff := -1, math.MaxFloat64
	for hi := range st.h {
		if ex.excluded(st, hi) || !st.suitable(hi, v) {
			continue
		}
		// Price first: the (costly) overload check only matters for a
		// host that would win.
		diff := st.powerAfter(hi, v) - st.h[hi].stalePw
		if !(diff < bestDiff) {
			continue
		}
		if st.h[hi].sumAlloc != 0 && st.overloadedAfter(det, hi, v) {
			continue
		}
		best, bestDiff = hi, diff
	}
	return best
}

// sortByDemand orders VMs by decreasing demand, keeping the given order
// among equals (Java's stable Collections.sort).
func (st *state) sortByDemand(vms []int) {
	sort.SliceStable(vms, func(a, b int) bool { return st.s.VMs[vms[a]].Demand > st.s.VMs[vms[b]].Demand })
}

// InitialPlacement places VMs that are not yet on a host, in order, the
// way a fresh cluster is filled: each VM asks for its full capacity and
// memory. With firstFit, the first host that fits is taken (the
// literature's non-migrating DVFS baseline); otherwise power-aware best
// fit is used with det's static fallback. It returns the chosen host per
// VM (-1 when none fits).
func InitialPlacement(s *Snapshot, det Detector, firstFit bool) []int {
	n := len(s.Hosts)
	type hs struct {
		alloc, mem float64
		count      int
	}
	h := make([]hs, n)
	for hi := range s.Hosts {
		for _, v := range s.Hosts[hi].VMs {
			h[hi].alloc += s.VMs[v].MIPS
			h[hi].mem += s.VMs[v].MemMB
			h[hi].count++
		}
	}
	idle := make([]float64, n)
	for hi := range s.Hosts {
		idle[hi] = s.Hosts[hi].Power.Power(clampUtil(s.Hosts[hi].Util))
	}
	limit := LiteratureFallback
	if t, ok := det.(Threshold); ok {
		limit = t.Limit
	}
	out := make([]int, len(s.VMs))
	for v := range s.VMs {
		out[v] = -1
		vm := &s.VMs[v]
		if vm.Host >= 0 {
			out[v] = vm.Host
			continue
		}
		best, bestDiff := -1, math.MaxFloat64
		for hi := range s.Hosts {
			H := &s.Hosts[hi]
			if H.Maintenance || H.PEMIPS < vm.MIPS || H.MIPS-h[hi].alloc < vm.MIPS || H.MemMB-h[hi].mem < vm.MemMB {
				continue
			}
			if H.MaxVMs > 0 && h[hi].count >= H.MaxVMs {
				continue
			}
			if s.Feasible != nil && !s.Feasible.Feasible(v, hi) {
				continue
			}
			if firstFit {
				best = hi
				break
			}
			// Running VMs have no demand yet at start: only the new VM counts.
			if h[hi].alloc != 0 && vm.MIPS/H.MIPS > limit {
				continue
			}
			diff := H.Power.Power(clampUtil((h[hi].alloc+vm.MIPS)/H.MIPS)) - idle[hi]
			if diff < bestDiff {
				best, bestDiff = hi, diff
			}
		}
		if best >= 0 {
			h[best].alloc += vm.MIPS
			h[best].mem += vm.MemMB
			h[best].count++
			out[v] = best
			if s.Feasible != nil {
				s.Feasible.Hold(v, best)
			}
		}
	}
	return out
}
