package balance

import "math"

// pHost is a host's mutable state while a round is planned.
type pHost struct {
	vms      []int
	sumReq   float64 // Σ demand, in VM order (uncapped)
	sumAlloc float64 // Σ allocated MIPS (CloudSim's getUtilizationOfCpuMips)
	avail    float64 // MIPS still free for a new VM
	memUsed  float64
	histOK   bool
	hist     [HistoryLength]float64
	histN    int
	stalePw  float64 // power at the measured utilisation
	touched  bool    // received a VM during this round
}

// state is the planning copy of a snapshot. Hosts and VMs in the snapshot
// are never modified.
type state struct {
	s     *Snapshot
	h     []pHost
	where []int // planned host per VM, -1 when taken off its host
	buf   [HistoryLength]float64
}

func newState(s *Snapshot) *state {
	st := &state{s: s, h: make([]pHost, len(s.Hosts)), where: make([]int, len(s.VMs))}
	for i := range st.where {
		st.where[i] = -1
	}
	for hi := range s.Hosts {
		H := &s.Hosts[hi]
		ph := &st.h[hi]
		ph.vms = append(make([]int, 0, len(H.VMs)+4), H.VMs...)
		for _, v := range H.VMs {
			st.where[v] = hi
		}
		ph.stalePw = H.Power.Power(clampUtil(H.Util))
		st.recompute(hi)
	}
	return st
}

func clampUtil(u float64) float64 {
	if u < 0 {
		return 0
	}
	if u > 1 {
		return 1
	}
	return u
}

// recompute rebuilds a host's sums the way CloudSim's time-shared,
// over-subscribable VM scheduler allocates: each VM gets its demand
// (capped at one core) while the host has room; once over-subscribed all
// VMs are scaled down to fit and rounded down.
func (st *state) recompute(hi int) {
	H := &st.s.Hosts[hi]
	ph := &st.h[hi]
	total, pe := H.MIPS, H.PEMIPS
	avail := total
	over := false
	var sumReq, sumC, mem float64
	for _, v := range ph.vms {
		vm := &st.s.VMs[v]
		d := vm.Demand
		sumReq += d
		c := math.Min(d, pe)
		sumC += c
		if avail >= c {
			avail -= c
		} else {
			over = true
			avail = 0
		}
		mem += vm.MemMB
	}
	var alloc float64
	if over {
		sf := total / sumC
		for _, v := range ph.vms {
			alloc += math.Floor(math.Min(st.s.VMs[v].Demand, pe) * sf)
		}
		avail = 0
	} else {
		for _, v := range ph.vms {
			alloc += math.Min(st.s.VMs[v].Demand, pe)
		}
	}
	ph.sumReq, ph.sumAlloc, ph.avail, ph.memUsed = sumReq, alloc, avail, mem
	ph.histOK = false
}

func (st *state) add(hi, v int) {
	ph := &st.h[hi]
	ph.vms = append(ph.vms, v)
	ph.touched = true
	st.where[v] = hi
	st.hold(v, hi)
	st.recompute(hi)
}

func (st *state) remove(hi, v int) {
	st.release(v, hi)
	ph := &st.h[hi]
	for i, x := range ph.vms {
		if x == v {
			ph.vms = append(ph.vms[:i], ph.vms[i+1:]...)
			break
		}
	}
	if st.where[v] == hi {
		st.where[v] = -1
	}
	st.recompute(hi)
}

// feasible asks the snapshot's placement rules (if any) whether VM v may
// go to host hi.
func (st *state) feasible(v, hi int) bool {
	return st.s.Feasible == nil || st.s.Feasible.Feasible(v, hi)
}

// hold and release tell the placement rules (if any) what the plan does.
func (st *state) hold(v, hi int) {
	if st.s.Feasible != nil {
		st.s.Feasible.Hold(v, hi)
	}
}

func (st *state) release(v, hi int) {
	if st.s.Feasible != nil {
		st.s.Feasible.Release(v, hi)
	}
}

// history returns the host's utilisation history (fractions of host
// capacity, most recent first) with VM cand (or -1) added last, trimmed
// of trailing zeros like CloudSim's PowerHostUtilizationHistory.
func (st *state) history(hi, cand int) []float64 {
	ph := &st.h[hi]
	hostMIPS := st.s.Hosts[hi].MIPS
	if !ph.histOK {
		ph.hist = [HistoryLength]float64{}
		for _, v := range ph.vms {
			vm := &st.s.VMs[v]
			for i, u := range vm.History {
				if i >= HistoryLength {
					break
				}
				ph.hist[i] += u * vm.MIPS / hostMIPS
			}
		}
		ph.histN = trimmedLen(ph.hist[:])
		ph.histOK = true
	}
	if cand < 0 {
		return ph.hist[:ph.histN]
	}
	st.buf = ph.hist
	vm := &st.s.VMs[cand]
	for i, u := range vm.History {
		if i >= HistoryLength {
			break
		}
		st.buf[i] += u * vm.MIPS / hostMIPS
	}
	return st.buf[:trimmedLen(st.buf[:])]
}

// demandWith is the host's total demand with VM cand (or -1) added.
func (st *state) demandWith(hi, cand int) float64 {
	d := st.h[hi].sumReq
	if cand >= 0 {
		d += st.s.VMs[cand].Demand
	}
	return d
}

// maxMigrationSeconds is the longest migration off the host (with cand).
func (st *state) maxMigrationSeconds(hi, cand int) float64 {
	maxMem := math.Inf(-1)
	for _, v := range st.h[hi].vms {
		maxMem = math.Max(maxMem, st.s.VMs[v].MemMB)
	}
	if cand >= 0 {
		maxMem = math.Max(maxMem, st.s.VMs[cand].MemMB)
	}
	if math.IsInf(maxMem, -1) {
		return 0
	}
	return MigrationSeconds(maxMem, st.s.Hosts[hi].BandwidthMbps)
}
