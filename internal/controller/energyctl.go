package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/energy"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// maxEnergyGap is the longest interval booked at once: a longer gap
// between passes (a stalled leader) is not guessed at.
const maxEnergyGap = 5 * time.Minute

// minEnergyStep is the shortest interval booked.
const minEnergyStep = time.Second

// energyStep integrates every host's power since the previous pass and
// books it in the ledger: a host that is on draws its power model at its
// measured CPU utilisation (trapezoid between the two passes), a standby
// host its standby power, a down or fenced host nothing (unknown). A
// host's energy is attributed to its VMs by their CPU use (evenly when
// all are idle) and through them to projects. The ledger is written to
// the store every EnergyPersistInterval and read back when a term
// starts, so it survives restarts and leader changes.
func (r *reconciler) energyStep(ctx context.Context) error {
	g := r.nrg
	now := r.now()
	if !g.loaded {
		if err := r.loadLedger(ctx); err != nil {
			return err
		}
		g.loaded, g.lastEnergy = true, now
		hosts, _ := r.c.hostView()
		for i := range hosts {
			g.lastUtil[hosts[i].Name] = hostUtil(&hosts[i])
		}
		return nil
	}
	dt := now.Sub(g.lastEnergy)
	if dt < minEnergyStep {
		return nil // passes come in bursts; a second is fine enough
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
	hosts, _ := r.c.hostView()
	vms := r.c.vmList(func(vm *model.VM) bool { return vm.Status.Host != "" && vm.Status.Phase == model.PhaseRunning })
	shares := map[string][]energy.Share{}
	for _, vm := range vms {
		shares[vm.Status.Host] = append(shares[vm.Status.Host], energy.Share{VM: vm.Key(), Project: vm.Project, CPU: vm.Status.Usage.CPUPercent})
	}
	for i := range hosts {
		h := &hosts[i]
		m := HostPowerModel(h)
		u1 := hostUtil(h)
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
		g.ledger.AddHost(h.Name, joules, shares[h.Name])
	}
}

func (r *reconciler) loadLedger(ctx context.Context) error {
	g := r.nrg
	kv, err := r.repo.Store().Get(ctx, store.EnergyKey)
	if errors.Is(err, store.ErrNotFound) {
		g.ledger, g.ledgerSince = &energy.Ledger{}, r.now()
		return nil
	}
	if err != nil {
		return fmt.Errorf("controller: read energy ledger: %w", err)
	}
	var rec model.EnergyLedger
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		r.m.log.Warn("energy ledger undecodable; starting a new one", "err", err)
		g.ledger, g.ledgerSince = &energy.Ledger{}, r.now()
		return nil
	}
	g.ledger = energy.RestoreLedger(energy.LedgerState{Hosts: rec.HostJ, VMs: rec.VMJ, Projects: rec.ProjectJ, Total: rec.TotalJ})
	g.ledgerSince = rec.Since
	return nil
}

// EnergyRecord renders a ledger for storing.
func energyRecord(l *energy.Ledger, since, at time.Time, hosts []model.Host) model.EnergyLedger {
	s := l.State()
	rec := model.EnergyLedger{Since: since, At: at, TotalJ: s.Total, HostJ: s.Hosts, VMJ: s.VMs, ProjectJ: s.Projects,
		Hosts: make(map[string]model.EnergyHost, len(hosts))}
	for i := range hosts {
		h := &hosts[i]
		m := HostPowerModel(h)
		w := 0.0
		switch {
		case hostOn(h):
			w = m.Power(hostUtil(h))
		case h.State == model.HostStandby:
			w = m.Standby()
		}
		rec.Hosts[h.Name] = model.EnergyHost{State: h.State, PowerModel: m.Name(), Watts: round1(w), CPUPercent: round1(h.Usage.CPUPercent)}
	}
	return rec
}

func (r *reconciler) persistLedger(ctx context.Context) error {
	g := r.nrg
	hosts, _ := r.c.hostView()
	rec := energyRecord(g.ledger, g.ledgerSince, r.now(), hosts)
	if _, _, err := r.repo.Txn(ctx, nil, []store.Op{store.Put(store.EnergyKey, mustJSON(rec))}); err != nil {
		return fmt.Errorf("controller: store energy ledger: %w", err)
	}
	g.lastPersist = r.now()
	return nil
}
