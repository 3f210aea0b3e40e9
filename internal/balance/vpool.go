package balance

import (
	"fmt"
	"math"
	"sort"
)

// VPoolConfig tunes vpool's own consolidation policy. The defaults are
// derived from first principles (see docs/simulation.md), not fitted to a
// particular trace.
type VPoolConfig struct {
	// Window is the number of recent samples whose aggregate peak a host
	// must be able to carry (6 samples = 30 min at 5-minute steps).
	Window int
	// Fill is the share of a host's capacity that the predicted peak of
	// its VMs may use when VMs are packed onto it.
	Fill float64
	// Trigger is the share of capacity above which the current or
	// forecast demand counts as an overload that must be relieved now.
	Trigger float64
	// Relieve is the share of capacity an overloaded host is brought back
	// to (predicted peak).
	Relieve float64
	// MaxMovesPerHost caps the VMs moved to empty one host: emptying a
	// host full of small VMs costs more than it saves.
	MaxMovesPerHost int
	// Budget caps consolidation moves per round as a share of the VMs
	// (overload relief is never capped); MinBudget is the floor.
	Budget    float64
	MinBudget int
}

// DefaultVPoolConfig returns the defaults.
func DefaultVPoolConfig() VPoolConfig {
	return VPoolConfig{Window: 6, Fill: 1.0, Trigger: 1.0, Relieve: 1.0, MaxMovesPerHost: 16, Budget: 0.10, MinBudget: 8}
}

// VPool is vpool's own policy. Compared with the literature's heuristics
// it (1) packs against the aggregate peak of the last Window samples of
// the VMs that would share a host, so VMs moved together do not
// overload their new host a few minutes later; (2) prefers the hosts that
// deliver the most CPU per watt; (3) relieves overloads with the fewest
// migrations (the smallest VM that is enough on its own); (4) empties a
// host only when every VM fits on hosts that are already on, the move
// count is small, and the round's budget allows it; (5) never empties a
// host that received VMs in the same round (hysteresis).
type VPool struct{ cfg VPoolConfig }

// NewVPool returns the policy.
func NewVPool(cfg VPoolConfig) *VPool { return &VPool{cfg: cfg} }

// Name implements Planner.
func (p *VPool) Name() string { return "vpool" }

// vpState is the per-round view vpool plans on.
type vpState struct {
	*state
	cfg  VPoolConfig
	w    int
	agg  [][]float64 // per host: aggregate demand (MIPS) per window sample
	vmW  [][]float64 // per VM: demand (MIPS) per window sample
	peak []float64   // per VM: its own window peak (MIPS)
}

func (p *VPool) newState(s *Snapshot) *vpState {
	w := max(p.cfg.Window, 1)
	vs := &vpState{state: newState(s), cfg: p.cfg, w: w}
	vs.vmW = make([][]float64, len(s.VMs))
	vs.peak = make([]float64, len(s.VMs))
	buf := make([]float64, len(s.VMs)*w)
	for v := range s.VMs {
		vm := &s.VMs[v]
		row := buf[v*w : (v+1)*w]
		row[0] = vm.Demand
		for i := 1; i < w; i++ {
			if i < len(vm.History) {
				row[i] = vm.History[i] * vm.MIPS
			} else {
				row[i] = vm.Demand
			}
		}
		vs.vmW[v] = row
		pk := 0.0
		for _, x := range row {
			pk = math.Max(pk, x)
		}
		vs.peak[v] = pk
	}
	vs.agg = make([][]float64, len(s.Hosts))
	abuf := make([]float64, len(s.Hosts)*w)
	for hi := range s.Hosts {
		vs.agg[hi] = abuf[hi*w : (hi+1)*w]
		for _, v := range vs.h[hi].vms {
			vs.addAgg(hi, v, 1)
		}
	}
	return vs
}

func (vs *vpState) addAgg(hi, v int, sign float64) {
	a := vs.agg[hi]
	for i, x := range vs.vmW[v] {
		a[i] += sign * x
	}
}

// peakWith is the host's aggregate window peak with VM v added (v<0: none).
func (vs *vpState) peakWith(hi, v int) float64 {
	a := vs.agg[hi]
	pk := 0.0
	for i := range a {
		x := a[i]
		if v >= 0 {
			x += vs.vmW[v][i]
		}
		pk = math.Max(pk, x)
	}
	return pk
}

// forecast is the host's demand expected at the next step: the current
// demand plus the recent upward trend.
func (vs *vpState) forecast(hi int) float64 {
	a := vs.agg[hi]
	now := a[0]
	if len(a) < 3 {
		return now
	}
	slope := (a[0] - a[2]) / 2
	return now + math.Max(slope, 0)
}

func (vs *vpState) move(v, from, to int) {
	if from >= 0 {
		vs.remove(from, v)
		vs.addAgg(from, v, -1)
	}
	vs.add(to, v)
	vs.addAgg(to, v, 1)
}

// fits reports whether VM v can join host hi below the fill line, and
// the snapshot's placement rules allow it there.
func (vs *vpState) fits(hi, v int, fill float64) bool {
	H := &vs.s.Hosts[hi]
	if H.Maintenance || (H.MaxVMs > 0 && len(vs.h[hi].vms) >= H.MaxVMs) {
		return false
	}
	if vs.peak[v] > H.PEMIPS {
		return false
	}
	if vs.s.MemoryCounts && H.MemMB-vs.h[hi].memUsed < vs.s.VMs[v].MemMB {
		return false
	}
	return vs.peakWith(hi, v) <= fill*H.MIPS && vs.feasible(v, hi)
}

// efficiency ranks hosts: watts per MIPS when filled to the fill line
// (lower is better).
func efficiency(H *Host, fill float64) float64 {
	return H.Power.Power(fill) / (H.MIPS * fill)
}

// bestTarget picks where VM v goes: the fullest active host it fits on
// (best fit), else the most efficient empty host. skip marks hosts that
// may not receive.
func (vs *vpState) bestTarget(v int, skip []bool, allowWake bool) int {
	best, bestLoad := -1, -1.0
	for hi := range vs.h {
		if skip[hi] || len(vs.h[hi].vms) == 0 || !vs.fits(hi, v, vs.cfg.Fill) {
			continue
		}
		load := vs.peakWith(hi, v) / vs.s.Hosts[hi].MIPS
		if load > bestLoad {
			best, bestLoad = hi, load
		}
	}
	if best >= 0 || !allowWake {
		return best
	}
	bestEff := math.MaxFloat64
	for hi := range vs.h {
		H := &vs.s.Hosts[hi]
		if skip[hi] || len(vs.h[hi].vms) != 0 || !vs.fits(hi, v, vs.cfg.Fill) {
			continue
		}
		if e := efficiency(H, vs.cfg.Fill); e < bestEff {
			best, bestEff = hi, e
		}
	}
	return best
}

// Plan implements Planner.
func (p *VPool) Plan(s *Snapshot) Plan {
	vs := p.newState(s)
	n := len(s.Hosts)
	skip := make([]bool, n)   // may not receive
	locked := make([]bool, n) // may not be emptied (received or relieved)
	var moves []Move
	// 1. Relieve overloads with as few moves as possible.
	nOver := 0
	for hi := range s.Hosts {
		H := &s.Hosts[hi]
		if H.Maintenance || len(vs.h[hi].vms) == 0 {
			continue
		}
		if math.Max(vs.agg[hi][0], vs.forecast(hi)) <= p.cfg.Trigger*H.MIPS && !vs.coreOverload(hi) {
			continue
		}
		nOver++
		skip[hi], locked[hi] = true, true
		for guard := 0; guard < 64; guard++ {
			excess := vs.peakWith(hi, -1) - p.cfg.Relieve*H.MIPS
			if excess <= 0 && !vs.coreOverload(hi) {
				break
			}
			v := vs.pickRelief(hi, excess)
			if v < 0 {
				break
			}
			t := vs.bestTarget(v, skip, true)
			if t < 0 {
				break
			}
			vs.move(v, hi, t)
			locked[t] = true
			moves = append(moves, Move{VM: v, From: hi, To: t, Reason: ReasonOverload})
		}
	}
	nRelief := len(moves)
	// 2. Consolidate: empty lightly loaded hosts onto hosts that are on.
	budget := max(p.cfg.MinBudget, int(p.cfg.Budget*float64(len(s.VMs))))
	moves = p.consolidate(vs, skip, locked, moves, budget)
	return Plan{Moves: moves, Note: fmt.Sprintf("%d overloaded hosts, %d relief moves, %d consolidation moves", nOver, nRelief, len(moves)-nRelief)}
}

// coreOverload reports a VM asking more than one core of host hi.
func (vs *vpState) coreOverload(hi int) bool {
	pe := vs.s.Hosts[hi].PEMIPS
	for _, v := range vs.h[hi].vms {
		if vs.s.VMs[v].Demand > pe {
			return true
		}
	}
	return false
}

// pickRelief chooses the VM to take off an overloaded host: a VM asking
// more than a core first, else the smallest-memory VM whose window
// demand covers the excess on its own, else the one with the largest
// window peak.
func (vs *vpState) pickRelief(hi int, excess float64) int {
	pe := vs.s.Hosts[hi].PEMIPS
	best, bestMem := -1, math.MaxFloat64
	big, bigPeak := -1, -1.0
	for _, v := range vs.h[hi].vms {
		vm := &vs.s.VMs[v]
		if vm.Migrating {
			continue
		}
		if vs.peak[v] > pe {
			return v
		}
		if vs.vmW[v][0] >= excess && vm.MemMB < bestMem {
			best, bestMem = v, vm.MemMB
		}
		if vs.peak[v] > bigPeak {
			big, bigPeak = v, vs.peak[v]
		}
	}
	if best >= 0 {
		return best
	}
	return big
}

// consolidate empties hosts, least loaded (and least efficient) first.
func (p *VPool) consolidate(vs *vpState, skip, locked []bool, moves []Move, budget int) []Move {
	s := vs.s
	type cand struct {
		hi   int
		load float64
	}
	var cands []cand
	for hi := range s.Hosts {
		if len(vs.h[hi].vms) == 0 || locked[hi] || s.Hosts[hi].Maintenance {
			continue
		}
		H := &s.Hosts[hi]
		cands = append(cands, cand{hi, vs.peakWith(hi, -1) / H.MIPS * efficiency(H, p.cfg.Fill)})
	}
	sort.Slice(cands, func(a, b int) bool {
		if cands[a].load != cands[b].load {
			return cands[a].load < cands[b].load
		}
		return cands[a].hi < cands[b].hi
	})
	used := 0
	for _, c := range cands {
		hi := c.hi
		if locked[hi] {
			continue
		}
		vms := append([]int(nil), vs.h[hi].vms...)
		if len(vms) == 0 || len(vms) > p.cfg.MaxMovesPerHost || used+len(vms) > budget {
			continue
		}
		sort.SliceStable(vms, func(a, b int) bool { return vs.peak[vms[a]] > vs.peak[vms[b]] })
		skip[hi] = true
		var done []Move
		ok := true
		for _, v := range vms {
			if s.VMs[v].Migrating {
				ok = false
				break
			}
			t := vs.bestTarget(v, skip, false)
			if t < 0 {
				ok = false
				break
			}
			vs.move(v, hi, t)
			done = append(done, Move{VM: v, From: hi, To: t, Reason: ReasonUnderload})
		}
		if !ok {
			for i := len(done) - 1; i >= 0; i-- {
				vs.move(done[i].VM, done[i].To, hi)
			}
			skip[hi] = false
			continue
		}
		for _, m := range done {
			locked[m.To] = true
		}
		used += len(done)
		moves = append(moves, done...)
	}
	return moves
}

// PlaceInitial implements InitialPlacer: VMs ask for their full capacity
// and memory; each goes to the fullest host it fits on, waking the most
// efficient empty host when none does.
func (p *VPool) PlaceInitial(s *Snapshot) []int {
	st := newState(s)
	out := make([]int, len(s.VMs))
	for v := range s.VMs {
		out[v] = s.VMs[v].Host
		if out[v] >= 0 {
			continue
		}
		vm := &s.VMs[v]
		best, bestKey := -1, math.Inf(1)
		for hi := range s.Hosts {
			H := &s.Hosts[hi]
			ph := &st.h[hi]
			if H.Maintenance || H.PEMIPS < vm.MIPS || ph.avail < vm.MIPS || H.MemMB-ph.memUsed < vm.MemMB {
				continue
			}
			if H.MaxVMs > 0 && len(ph.vms) >= H.MaxVMs {
				continue
			}
			if !st.feasible(v, hi) {
				continue
			}
			// Fullest first; among empty hosts the most efficient.
			key := -ph.sumReq / H.MIPS
			if len(ph.vms) == 0 {
				key = efficiency(H, p.cfg.Fill)
			}
			if key < bestKey {
				best, bestKey = hi, key
			}
		}
		if best >= 0 {
			st.add(best, v)
		}
		out[v] = best
	}
	return out
}
