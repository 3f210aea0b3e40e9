package balance

import (
	"fmt"
	"sort"
)

// Literature is the dynamic consolidation of Beloglazov & Buyya (2012) as
// CloudSim 3.0.3 implements it: find overloaded hosts with Det, take VMs
// off them with Sel until they are not, place those VMs with power-aware
// best fit decreasing, then repeatedly try to empty the least utilised
// host onto the others (all of its VMs or none).
//
// It deliberately keeps CloudSim's quirks, because the published figures
// depend on them: utilisation used to rank hosts and to price power is
// the one measured at the last update (not the planned one), hosts that
// were off are never consolidation targets, and hosts that just received
// VMs from overloaded hosts may still be emptied in the same round.
type Literature struct {
	Det Detector
	Sel Selector
	Par string // parameter as written in the policy name
}

// Name implements Planner.
func (p *Literature) Name() string {
	return fmt.Sprintf("%s-%s-%s", p.Det.Name(), p.Sel.Name(), p.Par)
}

// Plan implements Planner.
func (p *Literature) Plan(s *Snapshot) Plan {
	st := newState(s)
	n := len(s.Hosts)
	var over []int
	for hi := range s.Hosts {
		if !s.Hosts[hi].Maintenance && p.Det.overloaded(st, hi, -1) {
			over = append(over, hi)
		}
	}
	var toMove []int
	for _, hi := range over {
		for {
			v := p.Sel.pick(st, hi)
			if v < 0 {
				break
			}
			toMove = append(toMove, v)
			st.remove(hi, v)
			if !p.Det.overloaded(st, hi, -1) {
				break
			}
		}
	}
	ex := newExcluder(n)
	for _, hi := range over {
		ex.mark[hi] = true
	}
	st.sortByDemand(toMove)
	var moves []Move
	for _, v := range toMove {
		if t := st.pabfd(p.Det, v, ex); t >= 0 {
			st.add(t, v)
			moves = append(moves, Move{VM: v, From: s.VMs[v].Host, To: t, Reason: ReasonOverload})
		}
	}
	nOver := len(moves)
	moves = p.underload(st, over, moves)
	return Plan{Moves: moves, Note: fmt.Sprintf("%d overloaded hosts, %d overload moves, %d consolidation moves", len(over), nOver, len(moves)-nOver)}
}

// underload is CloudSim's getMigrationMapFromUnderUtilizedHosts.
func (p *Literature) underload(st *state, over []int, moves []Move) []Move {
	s := st.s
	n := len(s.Hosts)
	exUnder := make([]bool, n)
	count := 0
	mark := func(hi int) {
		if !exUnder[hi] {
			exUnder[hi] = true
			count++
		}
	}
	place := newExcluder(n)
	place.switchedOff = true
	for _, hi := range over {
		mark(hi)
		place.mark[hi] = true
	}
	for hi := range s.Hosts {
		if s.Hosts[hi].Util == 0 || s.Hosts[hi].Maintenance {
			mark(hi)
		}
	}
	// Candidates by measured utilisation, lowest first (ties: lowest index).
	order := make([]int, 0, n)
	for hi := range s.Hosts {
		if u := s.Hosts[hi].Util; u > 0 && u < 1 {
			order = append(order, hi)
		}
	}
	sort.SliceStable(order, func(a, b int) bool { return s.Hosts[order[a]].Util < s.Hosts[order[b]].Util })
	cursor := 0
	for count < n {
		u := -1
		for i := cursor; i < len(order); i++ {
			hi := order[i]
			if exUnder[hi] || !st.hasMovable(hi) {
				continue
			}
			u = hi
			break
		}
		if u < 0 {
			break
		}
		for cursor < len(order) && exUnder[order[cursor]] {
			cursor++
		}
		mark(u)
		place.mark[u] = true
		var vms []int
		for _, v := range st.h[u].vms {
			if !s.VMs[v].Migrating {
				vms = append(vms, v)
			}
		}
		if len(vms) == 0 {
			continue
		}
		placed := st.placeAllOrNone(p.Det, vms, place, ReasonUnderload)
		for _, m := range placed {
			mark(m.To)
		}
		moves = append(moves, placed...)
	}
	return moves
}

// hasMovable is the negation of CloudSim's
// areAllVmsMigratingOutOrAnyVmMigratingIn for planning purposes.
func (st *state) hasMovable(hi int) bool {
	for _, v := range st.h[hi].vms {
		if !st.s.VMs[v].Migrating {
			return true
		}
	}
	return false
}

// placeAllOrNone places every VM of vms (largest demand first) with PABFD
// or, if one does not fit, none of them. The VMs stay on their source
// host in the planning state (the source is excluded anyway).
func (st *state) placeAllOrNone(det Detector, vms []int, ex *excluder, why Reason) []Move {
	st.sortByDemand(vms)
	var placed []Move
	for _, v := range vms {
		t := st.pabfd(det, v, ex)
		if t < 0 {
			for _, m := range placed {
				st.removeOnly(m.To, m.VM)
				st.release(m.VM, m.To)
			}
			return nil
		}
		st.h[t].vms = append(st.h[t].vms, v)
		st.h[t].touched = true
		st.hold(v, t)
		st.recompute(t)
		placed = append(placed, Move{VM: v, From: st.s.VMs[v].Host, To: t, Reason: why})
	}
	return placed
}

// removeOnly drops v from host hi without touching where[v].
func (st *state) removeOnly(hi, v int) {
	ph := &st.h[hi]
	for i, x := range ph.vms {
		if x == v {
			ph.vms = append(ph.vms[:i], ph.vms[i+1:]...)
			break
		}
	}
	st.recompute(hi)
}
