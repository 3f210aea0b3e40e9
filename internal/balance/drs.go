package balance

import (
	"fmt"
	"math"
)

// DRSConfig tunes the DRS-style balancer.
type DRSConfig struct {
	// Tolerance is the standard deviation of host loads (fractions of
	// capacity) under which the cluster counts as balanced: no move is
	// planned (hysteresis).
	Tolerance float64
	// MinGain is the least reduction of the standard deviation a move
	// must bring per GiB of memory it copies (cost/benefit).
	MinGain float64
	// Ceiling is the load a target may reach.
	Ceiling float64
	// MaxMoves caps moves per round; MaxPerHost caps moves touching one
	// host per round.
	MaxMoves, MaxPerHost int
}

// DefaultDRSConfig returns the defaults.
func DefaultDRSConfig() DRSConfig {
	return DRSConfig{Tolerance: 0.1, MinGain: 0.005, Ceiling: 0.8, MaxMoves: 8, MaxPerHost: 2}
}

// DRS balances load between powered-on hosts like VMware DRS: while the
// spread of host loads exceeds the tolerance, it moves the VM from the
// most loaded host to the least loaded one that most reduces the spread,
// provided the gain per GiB copied beats MinGain. It never powers hosts
// on or off (pair it with a consolidation policy for that).
type DRS struct{ cfg DRSConfig }

// NewDRS returns the balancer.
func NewDRS(cfg DRSConfig) *DRS { return &DRS{cfg: cfg} }

// Name implements Planner.
func (p *DRS) Name() string { return "drs" }

// Plan implements Planner.
func (p *DRS) Plan(s *Snapshot) Plan {
	st := newState(s)
	var on []int
	for hi := range s.Hosts {
		if len(st.h[hi].vms) > 0 && !s.Hosts[hi].Maintenance {
			on = append(on, hi)
		}
	}
	load := func(hi int) float64 { return st.h[hi].sumReq / s.Hosts[hi].MIPS }
	spread := func() float64 {
		var sum, sq float64
		for _, hi := range on {
			l := load(hi)
			sum += l
			sq += l * l
		}
		n := float64(len(on))
		return math.Sqrt(math.Max(sq/n-(sum/n)*(sum/n), 0))
	}
	touched := map[int]int{}
	var moves []Move
	for len(on) > 1 && len(moves) < p.cfg.MaxMoves {
		sd := spread()
		if sd <= p.cfg.Tolerance {
			break
		}
		src, dst := on[0], on[0]
		for _, hi := range on {
			if load(hi) > load(src) {
				src = hi
			}
			if load(hi) < load(dst) {
				dst = hi
			}
		}
		if touched[src] >= p.cfg.MaxPerHost || touched[dst] >= p.cfg.MaxPerHost {
			break
		}
		best, bestScore := -1, 0.0
		for _, v := range st.h[src].vms {
			vm := &s.VMs[v]
			if vm.Migrating || vm.Demand > s.Hosts[dst].PEMIPS || !st.suitable(dst, v) ||
				(st.h[dst].sumReq+vm.Demand)/s.Hosts[dst].MIPS > p.cfg.Ceiling {
				continue
			}
			st.remove(src, v)
			st.add(dst, v)
			gain := sd - spread()
			st.remove(dst, v)
			st.add(src, v)
			score := gain / math.Max(vm.MemMB/1024, 0.25)
			if score > bestScore {
				best, bestScore = v, score
			}
		}
		if best < 0 || bestScore < p.cfg.MinGain {
			break
		}
		st.remove(src, best)
		st.add(dst, best)
		touched[src]++
		touched[dst]++
		moves = append(moves, Move{VM: best, From: src, To: dst, Reason: ReasonBalance})
	}
	return Plan{Moves: moves, Note: fmt.Sprintf("load spread %.3f after %d moves", spread(), len(moves))}
}

// Budget caps any planner's moves per round and per host (a host counts
// a move whether it sends or receives). Moves past the caps are dropped
// in plan order; dropping part of a consolidation leaves the source
// partly emptied, which the next round picks up again.
type Budget struct {
	Planner  Planner
	PerRound int // 0: no cap
	PerHost  int // 0: no cap
}

// Name implements Planner.
func (b Budget) Name() string { return b.Planner.Name() }

// Plan implements Planner.
func (b Budget) Plan(s *Snapshot) Plan {
	p := b.Planner.Plan(s)
	per := map[int]int{}
	out := p.Moves[:0:0]
	for _, m := range p.Moves {
		if b.PerRound > 0 && len(out) >= b.PerRound {
			break
		}
		if b.PerHost > 0 && (per[m.From] >= b.PerHost || per[m.To] >= b.PerHost) {
			continue
		}
		per[m.From]++
		per[m.To]++
		out = append(out, m)
	}
	if dropped := len(p.Moves) - len(out); dropped > 0 {
		p.Note += fmt.Sprintf("; budget dropped %d moves", dropped)
	}
	p.Moves = out
	return p
}
