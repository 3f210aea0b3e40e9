package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/energy"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// maxEnergyGap is the longest interval booked at once: a longer gap
// between passes (a stalled leader) is not guessed at.
const maxEnergyGap = 5 * time.Minute

// minEnergyStep is the shortest interval booked.
const minEnergyStep = time.Second

// maxEnergyStep bounds energyStepFor.
const maxEnergyStep = 10 * time.Second

// energyStepFor is the interval booked with hosts hosts: a second, or 1
// ms a host up to 10 s — the interval at which a server with that many
// hosts asks them to beat (docs/scale.md), so that the utilisation a
// pass books has mostly changed since the last one. Each pass walks
// every host and running VM: every second it was 11 % of one server's
// CPU at 10,000 hosts and 100,000 VMs (docs/scale.md, sixth round).
func energyStepFor(hosts int) time.Duration {
	return min(max(time.Duration(hosts)*time.Millisecond, minEnergyStep), maxEnergyStep)
}

// energyStep integrates every host's power since the previous pass and
// books it in the ledger: a host that is on draws its power model at its
// measured CPU utilisation (trapezoid between the two passes), a standby
// host its standby power, a down or fenced host nothing (unknown). A
// host's energy is attributed to its VMs by their CPU use (evenly when
// all are idle) and through them to projects. The ledger is written to
// the store every EnergyPersistInterval and read back when a term
// starts, so it survives restarts and leader changes. It is stored split
// (a record per host, kept in shards of many hosts, and per project), and
// what was deleted is folded away, so no stored value grows with the
// cluster's history.
func (r *reconciler) energyStep(ctx context.Context) error {
	g := r.nrg
	now := r.now()
	if !g.loaded {
		if err := r.loadLedger(ctx); err != nil {
			return err
		}
		g.loaded, g.lastEnergy = true, now
		// What the previous leader booked after its last persist died
		// with it: book again from then, at today's draw (at most
		// maxEnergyGap), so that a failover leaves no hole.
		if at := g.persistedAt; !at.IsZero() && at.Before(now) {
			g.lastEnergy = at
		}
		hosts, _ := r.c.hostView()
		for i := range hosts {
			g.lastUtil[hosts[i].Name] = hostUtil(&hosts[i])
		}
		return nil
	}
	dt := now.Sub(g.lastEnergy)
	if dt < energyStepFor(r.c.hostCount()) {
		return nil // passes come in bursts; a second (more with many hosts) is fine enough
	}
	g.lastEnergy = now
	r.bookEnergy(min(dt, maxEnergyGap).Seconds())
	if now.Sub(g.lastPersist) >= r.m.cfg.EnergyPersistInterval {
		return r.persistLedger(ctx)
	}
	return nil
}

// bookEnergy books seconds of every host's draw.
func (r *reconciler) bookEnergy(seconds float64) {
	g := r.nrg
	hosts, usage := r.c.hostsShared() // read only
	running := r.c.runningKeyed()
	for _, h := range hosts {
		m := HostPowerModel(h)
		u1 := hostUtilWith(usage, h)
		u0, ok := g.lastUtil[h.Name]
		if !ok {
			u0 = u1
		}
		g.lastUtil[h.Name] = u1
		var joules float64
		switch {
		case hostOn(h):
			joules = (m.Power(u0) + m.Power(u1)) / 2 * seconds
		case h.State == model.HostStandby:
			joules = m.Standby() * seconds
		}
		// one buffer for every host, each VM's key kept by the cache:
		// at 100,000 running VMs this pass walks every one
		shares := g.shares[:0]
		vms := running[h.Name]
		g.usage = r.vmUsagesOf(vms, g.usage)
		for i, rv := range vms {
			shares = append(shares, energy.Share{VM: rv.key, Project: rv.vm.Project, CPU: g.usage[i].CPUPercent})
		}
		g.shares = shares
		g.ledger.AddHost(h.Name, joules, shares)
	}
}

// loadLedger reads the stored ledger back when a term starts.
func (r *reconciler) loadLedger(ctx context.Context) error {
	g := r.nrg
	rec, written, found, err := r.repo.ReadEnergy(ctx)
	if err != nil {
		r.m.log.Warn("energy ledger unreadable; starting a new one", "err", err)
		rec, written, found = state.EnergyRecords{}, map[string][]byte{}, false
	}
	g.written, g.deletedVMs = written, map[string]float64{}
	if !found {
		g.ledger, g.ledgerSince = &energy.Ledger{}, r.now()
		return nil
	}
	ls := energy.LedgerState{Hosts: map[string]float64{}, VMs: map[string]float64{}, Projects: map[string]float64{}, Total: rec.Meta.TotalJ}
	for h, hr := range rec.Hosts {
		ls.Hosts[h] = hr.Joules
		for vm, j := range hr.VMs {
			ls.VMs[vm] += j
		}
	}
	for p, pr := range rec.Projects {
		ls.Projects[p] = pr.Joules
		for vm, j := range pr.VMs {
			ls.VMs[vm] += j
		}
		if pr.DeletedVMsJ > 0 {
			g.deletedVMs[p] = pr.DeletedVMsJ
		}
	}
	g.ledger, g.ledgerSince, g.persistedAt = energy.RestoreLedger(ls), rec.Meta.Since, rec.Meta.At
	g.deletedHosts, g.deletedProjects = rec.Meta.DeletedHostsJ, rec.Meta.DeletedProjectsJ
	return nil
}

// hostPower is a host's power now, as the ledger shows it.
func hostPower(h *model.Host) model.EnergyHost {
	m := HostPowerModel(h)
	w := 0.0
	switch {
	case hostOn(h):
		w = m.Power(hostUtil(h))
	case h.State == model.HostStandby:
		w = m.Standby()
	}
	return model.EnergyHost{State: h.State, PowerModel: m.Name(), Watts: round1(w), CPUPercent: round1(h.Usage.CPUPercent)}
}

// fold forgets, in the ledger, the VMs, hosts and projects that no longer
// exist: a deleted VM's energy stays in its project (DeletedVMsJ), a
// deleted host's or project's in the header. It keeps the ledger, and
// every stored value, as large as the cluster is now.
func (g *energyState) fold(ls *energy.LedgerState, vms map[string]string, hosts, projects map[string]bool) {
	for vm, j := range ls.VMs {
		if _, live := vms[vm]; !live {
			p, _, _ := strings.Cut(vm, "/")
			g.deletedVMs[p] += j
			delete(ls.VMs, vm)
		}
	}
	for h, j := range ls.Hosts {
		if !hosts[h] {
			g.deletedHosts += j
			delete(ls.Hosts, h)
		}
	}
	for p, j := range ls.Projects {
		if !projects[p] {
			g.deletedProjects += j
			delete(ls.Projects, p)
			delete(g.deletedVMs, p)
		}
	}
}

// persistLedger folds what no longer exists and writes the records that
// changed (state.WriteEnergy): one per host (its draw and the energy of
// the VMs on it; in shards), one per project, and the header.
func (r *reconciler) persistLedger(ctx context.Context) error {
	g := r.nrg
	hosts, _ := r.c.hostView()
	ps, err := r.repo.ListProjects(ctx)
	if err != nil {
		return err
	}
	projects := make(map[string]bool, len(ps))
	for _, p := range ps {
		projects[p.Name] = true
	}
	vms := r.c.vmHosts()
	known := make(map[string]bool, len(hosts))
	for i := range hosts {
		known[hosts[i].Name] = true
	}
	ls := g.ledger.State()
	g.fold(&ls, vms, known, projects)
	g.ledger = energy.RestoreLedger(ls)
	rec := state.EnergyRecords{Meta: model.EnergyMeta{Since: g.ledgerSince, At: r.now(), TotalJ: ls.Total,
		DeletedHostsJ: g.deletedHosts, DeletedProjectsJ: g.deletedProjects},
		Hosts: make(map[string]model.EnergyHostRecord, len(hosts)), Projects: make(map[string]model.EnergyProjectRecord, len(ls.Projects))}
	for i := range hosts {
		rec.Hosts[hosts[i].Name] = model.EnergyHostRecord{Joules: ls.Hosts[hosts[i].Name], EnergyHost: hostPower(&hosts[i])}
	}
	for p, j := range ls.Projects {
		rec.Projects[p] = model.EnergyProjectRecord{Joules: j, DeletedVMsJ: g.deletedVMs[p]}
	}
	for vm, j := range ls.VMs {
		if hr, ok := rec.Hosts[vms[vm]]; ok {
			hr.VMs = addJoules(hr.VMs, vm, j)
			rec.Hosts[vms[vm]] = hr
			continue
		}
		p, _, _ := strings.Cut(vm, "/")
		pr := rec.Projects[p]
		pr.VMs = addJoules(pr.VMs, vm, j)
		rec.Projects[p] = pr
	}
	written, err := r.repo.WriteEnergy(ctx, rec, g.written)
	g.written = written
	if err != nil {
		return fmt.Errorf("controller: store energy ledger: %w", err)
	}
	g.lastPersist = r.now()
	return nil
}

func addJoules(m map[string]float64, k string, j float64) map[string]float64 {
	if m == nil {
		m = map[string]float64{}
	}
	m[k] += j
	return m
}
