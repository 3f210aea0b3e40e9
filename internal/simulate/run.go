package simulate

import (
	"context"
	"math"
	"sort"

	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/energy"
)

// run steps through the trace: every interval the data centre is updated
// and the planner runs; migrations finish after memory / (bandwidth / 2)
// seconds and update the data centre again, as CloudSim's events do.
func (e *engine) run(ctx context.Context) error {
	steps := 0
	for x := startOffset + e.interval; x < e.limit; x += e.interval {
		steps++
	}
	t := startOffset
	e.firstT = math.NaN()
	for k := 1; ; k++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		t += e.interval
		if t >= e.limit {
			// CloudSim stops at the limit: the step that falls after it
			// is delivered but never processed.
			break
		}
		final := false
		e.completeUntil(t)
		e.updateAll(t)
		if math.IsNaN(e.firstT) {
			e.firstT = t
		}
		if e.planner != nil {
			plan := e.planner.Plan(e.snapshot(false))
			e.apply(plan, t)
		}
		if e.cfg.Series {
			e.sample(t)
		}
		if e.cfg.Progress != nil {
			e.cfg.Progress(min(k, steps), steps)
		}
		if final {
			break
		}
	}
	for i := range e.hosts {
		e.hosts[i].h.finish()
	}
	for i := range e.vms {
		e.vms[i].h.finish()
	}
	e.res.Migrations = e.migs
	if e.view != nil {
		return e.view.err
	}
	return nil
}

// completeUntil finishes the migrations due up to t, grouped by time.
func (e *engine) completeUntil(t float64) {
	for len(e.pending) > 0 && e.pending[0].at <= t {
		at := e.pending[0].at
		if at > e.lastT {
			e.updateAll(at)
		}
		i := 0
		for i < len(e.pending) && e.pending[i].at == at {
			e.finishMigration(e.pending[i])
			i++
		}
		e.pending = e.pending[i:]
		e.updateAll(at)
	}
}

// finishMigration is Datacenter.processVmMigrate: the VM leaves the host
// the VM table points to and is created on the target.
func (e *engine) finishMigration(m migration) {
	v := &e.vms[m.vm]
	if v.host >= 0 {
		removeInt(&e.hosts[v.host].vms, m.vm)
	}
	if e.view != nil {
		e.view.arrive(m.vm, v.host, m.to)
	}
	tgt := &e.hosts[m.to]
	removeInt(&tgt.vms, m.vm)
	removeInt(&tgt.migIn, m.vm)
	tgt.vms = append(tgt.vms, m.vm)
	v.host = m.to
	v.inMig = false
}

func removeInt(s *[]int, x int) {
	for i, y := range *s {
		if y == x {
			*s = append((*s)[:i], (*s)[i+1:]...)
			return
		}
	}
}

// apply starts the plan's migrations at t.
func (e *engine) apply(p balance.Plan, t float64) {
	if len(p.Moves) == 0 {
		return
	}
	dirty := map[int]bool{}
	for _, m := range p.Moves {
		v := &e.vms[m.VM]
		if !v.alive || m.To < 0 || m.To == v.host {
			continue
		}
		tgt := &e.hosts[m.To]
		v.inMig = true
		if !tgt.isMigIn(m.VM) {
			tgt.migIn = append(tgt.migIn, m.VM)
			tgt.vms = append(tgt.vms, m.VM)
		}
		e.migs++
		if e.view != nil {
			e.view.occupy(m.VM, m.To) // the target holds the VM's capacity while it copies
		}
		at := t + balance.MigrationSeconds(v.mem, tgt.typ.BandwidthMbps)
		e.pending = append(e.pending, migration{vm: m.VM, to: m.To, at: at})
		dirty[m.To] = true
		if v.host >= 0 {
			dirty[v.host] = true
		}
	}
	sort.SliceStable(e.pending, func(a, b int) bool { return e.pending[a].at < e.pending[b].at })
	ids := make([]int, 0, len(dirty))
	for h := range dirty {
		ids = append(ids, h)
	}
	sort.Ints(ids)
	for _, h := range ids {
		e.updateHost(h, t)
	}
}

// updateAll is PowerDatacenter's update: every host recomputes its
// allocation at t, energy is booked for the time since the last update,
// and VMs that ask for nothing are removed (literature only).
func (e *engine) updateAll(t float64) {
	dt := t - e.lastT
	for i := range e.hosts {
		h := &e.hosts[i]
		if !h.hasEntry || len(h.vms) > 0 || h.util != 0 || h.lastActive {
			e.updateHost(i, t)
		} else {
			h.prev = 0
		}
	}
	if dt > 0 {
		for i := range e.hosts {
			h := &e.hosts[i]
			if h.prev == 0 {
				continue
			}
			e.joules += energy.IntervalJoules(h.typ.Power, utilFrac(h.prev, h.mips), utilFrac(h.util, h.mips), dt)
		}
	}
	if e.cfg.Setup == Literature {
		e.removeFinished()
	}
	e.lastT = t
}

// removeFinished drops VMs whose demand is exactly zero: CloudSim treats
// them as completed (HostDynamicWorkload.getCompletedVms).
func (e *engine) removeFinished() {
	for i := range e.hosts {
		h := &e.hosts[i]
		for j := 0; j < len(h.vms); j++ {
			v := &e.vms[h.vms[j]]
			if v.inMig || v.req != 0 {
				continue
			}
			id := h.vms[j]
			v.alive = false
			if v.host >= 0 {
				removeInt(&e.hosts[v.host].vms, id)
				if e.view != nil {
					e.view.drop(id, v.host)
				}
			}
			if v.host == i {
				j--
			}
		}
	}
}

// updateHost is HostDynamicWorkload.updateVmsProcessing at time t.
func (e *engine) updateHost(i int, t float64) {
	h := &e.hosts[i]
	h.prev = h.util
	e.setClock(t)
	for _, id := range h.vms {
		e.touch(&e.vms[id])
	}
	// Allocation by the time-shared, over-subscribable scheduler.
	if cap(h.alloc) < len(h.vms) {
		h.alloc = make([]float64, len(h.vms), 2*len(h.vms))
	}
	h.alloc = h.alloc[:len(h.vms)]
	avail := h.mips
	over := false
	var required float64
	for j, id := range h.vms {
		v := &e.vms[id]
		c := math.Min(v.req, h.pe)
		need := c
		if h.isMigIn(id) {
			need = c * 0.1
		}
		required += need
		if avail >= need {
			avail -= need
		} else {
			over, avail = true, 0
		}
		h.alloc[j] = c
	}
	if over {
		sf := h.mips / required
		for j, id := range h.vms {
			c := h.alloc[j]
			switch {
			case h.isMigIn(id):
				h.alloc[j] = math.Floor(c * 0.1 * sf)
			case e.vms[id].inMig:
				h.alloc[j] = math.Floor(c * sf * 0.9)
			default:
				h.alloc[j] = math.Floor(c * sf)
			}
		}
	} else {
		for j, id := range h.vms {
			switch {
			case h.isMigIn(id):
				h.alloc[j] *= 0.1
			case e.vms[id].inMig:
				h.alloc[j] *= 0.9
			}
		}
	}
	h.util = 0
	var requested float64
	for j, id := range h.vms {
		v := &e.vms[id]
		a := h.alloc[j]
		if !h.isMigIn(id) {
			v.h.add(entry{t: t, alloc: a, req: v.req, flag: v.inMig})
			if v.inMig {
				a /= 0.9
			}
		}
		h.util += a
		requested += v.req
	}
	h.h.add(entry{t: t, alloc: h.util, req: requested, flag: h.util > 0})
	h.hasEntry = true
	h.lastActive = h.util > 0
}

func (e *engine) sample(t float64) {
	s := Sample{T: t}
	for i := range e.hosts {
		h := &e.hosts[i]
		if h.util > 0 {
			s.ActiveHosts++
			s.PowerW += h.typ.Power.Power(utilFrac(h.util, h.mips))
		}
	}
	e.res.Series = append(e.res.Series, s)
}

func (e *engine) result() *Result {
	r := e.res
	r.EnergyKWh = e.joules / energy.JoulesPerKWh
	if e.hm.activeTime > 0 {
		r.SLATAH = e.hm.violTime / e.hm.activeTime
	}
	if e.vmm.requested > 0 {
		r.PDM = e.vmm.underMigration / e.vmm.requested
	}
	r.SLAV = r.SLATAH * r.PDM
	r.ESV = r.EnergyKWh * r.SLAV
	r.HostShutdowns = e.hm.shutdowns
	if span := e.lastT - e.firstT; span > 0 {
		r.MeanActiveHosts = e.hm.activeTime / span
	}
	return &r
}
