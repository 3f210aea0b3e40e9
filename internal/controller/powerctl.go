package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// Host power events.
const (
	EventHostWake    = "host.wake"
	EventHostStandby = "host.standby"
)

// powerView is the power controller's classification of the hosts.
type powerView struct {
	snap     *Snapshot
	on       []model.Host // ready (cordoned or not) and maintenance
	ready    []model.Host // ready and not cordoned
	waking   []model.Host // standby, asked to wake
	sleeping []model.Host // standby, meant to stay so
	pending  []*model.VM  // VMs waiting for capacity
}

// powerStep is the power controller: it marks woken hosts ready once
// their agent reports, wakes a standby host when a waiting VM would fit
// on it, when fewer than MinHostsOn hosts are on or when the hosts that
// are on run out of CPU headroom, and — when standby is enabled — puts
// one host that has been empty for IdleSeconds to standby per pass.
func (r *reconciler) powerStep(ctx context.Context) error {
	set, _, err := LoadBalanceSettings(ctx, r.repo.Store())
	if err != nil {
		return err
	}
	if !set.Power.Standby && !r.c.anyStandby() {
		// nothing to wake, settle or put to standby: the view below
		// would copy every host and allocation for no decision
		return nil
	}
	pv := r.powerView()
	var errs []error
	for _, h := range pv.waking {
		if h.LastSeen.After(h.Power.Since) {
			errs = append(errs, r.settleWake(ctx, h.Name))
		}
	}
	if h, why := r.wakeChoice(pv, set); h != nil {
		errs = append(errs, r.wake(ctx, *h, why))
	} else if set.Power.Standby {
		if h, why := r.standbyChoice(pv, set); h != nil {
			errs = append(errs, r.standby(ctx, *h, why))
		}
	}
	return errors.Join(errs...)
}

func (r *reconciler) powerView() *powerView {
	snap, _ := r.c.snapshot()
	pv := &powerView{snap: snap}
	for _, h := range snap.Hosts {
		switch {
		case h.State == model.HostReady || h.State == model.HostMaintenance:
			pv.on = append(pv.on, h)
			if h.State == model.HostReady && !h.Cordoned {
				pv.ready = append(pv.ready, h)
			}
		case h.State == model.HostStandby && h.Power != nil && h.Power.Desired == model.HostPowerOn:
			pv.waking = append(pv.waking, h)
		case h.State == model.HostStandby:
			pv.sleeping = append(pv.sleeping, h)
		}
	}
	// VMs the scheduling loop found to fit nowhere: it stored their
	// explanation without a chosen host.
	for _, vm := range r.c.pendingList() {
		if vm.Status.Explanation != nil && vm.Status.Explanation.Chosen == "" {
			pv.pending = append(pv.pending, vm)
		}
	}
	return pv
}

// cpuLoad is the measured CPU in use on hosts and their capacity, in CPUs.
func cpuLoad(hosts []model.Host) (used, capacity float64) {
	for i := range hosts {
		used += hostUtil(&hosts[i]) * float64(hosts[i].Capacity.CPUs)
		capacity += float64(hosts[i].Capacity.CPUs)
	}
	return used, capacity
}

// wakeChoice picks a standby host to wake and says why, or nil.
func (r *reconciler) wakeChoice(pv *powerView, set model.BalanceSettings) (*model.Host, string) {
	if len(pv.sleeping) == 0 {
		return nil, ""
	}
	if h, vm := r.wakeForPending(pv); h != nil {
		return h, "VM " + vm + " is waiting for capacity and fits on it"
	}
	if len(pv.waking) > 0 {
		return nil, "" // one at a time for the reasons below
	}
	best := bestToWake(pv.sleeping)
	if n := len(pv.on) + len(pv.waking); n < set.Power.MinHostsOn {
		return best, fmt.Sprintf("%d hosts on, at least %d wanted", n, set.Power.MinHostsOn)
	}
	used, capacity := cpuLoad(pv.ready)
	if limit := 1 - set.Power.HeadroomPercent/100; capacity > 0 && used > limit*capacity {
		return best, fmt.Sprintf("CPU in use %.0f%% of the ready hosts, above %.0f%% (headroom %.0f%%)",
			100*used/capacity, 100*limit, set.Power.HeadroomPercent)
	}
	return nil, ""
}

// wakeForPending asks the Placer where each waiting VM would go if the
// standby hosts were ready; the first that lands on a sleeping host wakes
// it. (Placements on hosts already waking count, so one host is not woken
// twice for the same need.)
func (r *reconciler) wakeForPending(pv *powerView) (*model.Host, string) {
	if len(pv.pending) == 0 {
		return nil, ""
	}
	hs := &Snapshot{Hosts: append([]model.Host(nil), pv.snap.Hosts...), Allocs: pv.snap.Allocs, Policy: pv.snap.Policy,
		PolicyRev: pv.snap.PolicyRev, Now: r.now(), Epoch: r.m.epochs.Add(1)}
	sleeping := map[string]bool{}
	for _, h := range pv.sleeping {
		sleeping[h.Name] = true
	}
	for i := range hs.Hosts {
		h := &hs.Hosts[i]
		if h.State == model.HostStandby && !h.Cordoned {
			h.State = model.HostReady
		}
	}
	for _, vm := range pv.pending {
		host, _ := r.powerPlacer.Place(hs, vm)
		if host == "" {
			continue
		}
		if sleeping[host] {
			return findHost(pv.snap.Hosts, host), vm.Key()
		}
		hs.setAlloc(allocAdd(hs.Allocs[host], host, vm))
	}
	return nil, ""
}

// bestToWake is the sleeping host that gives the most CPU per watt at
// full load (ties by name).
func bestToWake(hosts []model.Host) *model.Host {
	hs := append([]model.Host(nil), hosts...)
	eff := func(h *model.Host) float64 {
		return HostPowerModel(h).Max() / float64(max(h.Capacity.CPUs, 1))
	}
	sort.SliceStable(hs, func(i, j int) bool { return eff(&hs[i]) < eff(&hs[j]) })
	return &hs[0]
}

// standbyChoice picks a ready host that has been empty (no VM, no load
// balancer) for IdleSeconds
// and can go without breaking MinHostsOn or the headroom, or nil.
func (r *reconciler) standbyChoice(pv *powerView, set model.BalanceSettings) (*model.Host, string) {
	g := r.pow
	now := r.now()
	var cand []model.Host
	for _, h := range pv.ready {
		a := pv.snap.Allocs[h.Name]
		// A host serving load balancers is not empty: standby would move
		// them and break their connections.
		if len(a.VMs) > 0 || a.Used != (model.Resources{}) || h.Balancers > 0 {
			delete(g.emptySince, h.Name)
			continue
		}
		since, ok := g.emptySince[h.Name]
		if !ok {
			since = emptiedAt(&h, &a, now)
			g.emptySince[h.Name] = since
		}
		idle := time.Duration(set.Power.IdleSeconds) * time.Second
		woke := h.Power != nil && now.Sub(h.Power.Since) < idle
		if now.Sub(since) >= idle && !woke && h.Labels[model.LabelNoStandby] != "true" {
			cand = append(cand, h)
		}
	}
	if len(cand) == 0 || len(pv.pending) > 0 || len(pv.on)+len(pv.waking)-1 < set.Power.MinHostsOn {
		return nil, ""
	}
	// The least efficient empty host goes first.
	sort.SliceStable(cand, func(i, j int) bool {
		return HostPowerModel(&cand[i]).Max()/float64(max(cand[i].Capacity.CPUs, 1)) >
			HostPowerModel(&cand[j]).Max()/float64(max(cand[j].Capacity.CPUs, 1))
	})
	h := cand[0]
	used, capacity := cpuLoad(pv.ready)
	capacity -= float64(h.Capacity.CPUs)
	if limit := 1 - set.Power.HeadroomPercent/100; used > 0 && (capacity <= 0 || used > limit*capacity) {
		return nil, ""
	}
	return &h, fmt.Sprintf("empty for %s", now.Sub(g.emptySince[h.Name]).Round(time.Second))
}

// emptiedAt is when a host's allocation became empty, from the store
// (its last write, else the host's creation for a host that never held
// a VM), so that every leader — a new one after a failover too — counts
// a host's idle time alike (docs/ha.md). A time it cannot know counts
// from now.
func emptiedAt(h *model.Host, a *model.Allocation, now time.Time) time.Time {
	since := a.UpdatedAt
	if h.CreatedAt.After(since) {
		since = h.CreatedAt
	}
	if since.IsZero() || since.After(now) {
		return now
	}
	return since
}

// standby records the host as standby — guarded on the host's and its
// allocation's revisions, so a VM placed meanwhile cancels it — then
// powers it off. A failed power-off puts the host back to ready.
func (r *reconciler) standby(ctx context.Context, h model.Host, why string) error {
	now := r.now()
	a := r.c.allocOf(h.Name)
	nh := h
	nh.Revision, nh.State, nh.UpdatedAt = 0, model.HostStandby, now
	nh.Power = &model.HostPower{Desired: model.HostPowerStandby, Since: now, Reason: why}
	ev := model.Event{Time: now, Kind: EventHostStandby, Object: state.HostObject(h.Name), From: string(h.State),
		To: string(model.HostStandby), Message: fmt.Sprintf("host %s: %s → standby (%s)", h.Name, h.State, why)}
	ok, _, err := r.repo.Txn(ctx, []store.Cond{store.IfRev(store.HostKey(h.Name), h.Revision), store.IfRev(store.AllocKey(h.Name), a.Revision)},
		[]store.Op{store.Put(store.HostKey(h.Name), mustJSON(&nh)), state.EventOp(ev)})
	if err != nil {
		return fmt.Errorf("controller: put host %s to standby: %w", h.Name, err)
	}
	if !ok {
		return nil // changed meanwhile: the next pass decides again
	}
	delete(r.pow.emptySince, h.Name)
	r.m.log.Info("host to standby", "host", h.Name, "reason", why)
	r.gate.auditHost(ctx, model.AuditHostStandby, h.Name, why)
	if err := r.m.cfg.Power.PowerOff(ctx, nh); err != nil {
		_, rerr := r.repo.UpdateHost(ctx, h.Name, func(x *model.Host) error {
			if x.State != model.HostStandby {
				return state.ErrSkip
			}
			x.State, x.Power = model.HostReady, nil
			return nil
		})
		return errors.Join(fmt.Errorf("controller: power off host %s: %w", h.Name, err), rerr)
	}
	return nil
}

// wake asks a standby host to come back: Host.Power says "on" (the agent
// protocol carries it), then the HostPower switches it on. The host stays
// standby — nothing is placed on it — until its agent reports.
func (r *reconciler) wake(ctx context.Context, h model.Host, why string) error {
	now := r.now()
	nh, err := r.repo.UpdateHost(ctx, h.Name, func(x *model.Host) error {
		if x.State != model.HostStandby || (x.Power != nil && x.Power.Desired == model.HostPowerOn) {
			return state.ErrSkip
		}
		x.Power = &model.HostPower{Desired: model.HostPowerOn, Since: now, Reason: why}
		return nil
	})
	if err != nil {
		return fmt.Errorf("controller: wake host %s: %w", h.Name, err)
	}
	if nh.Power == nil || nh.Power.Desired != model.HostPowerOn || !nh.Power.Since.Equal(now) {
		return nil
	}
	r.m.log.Info("waking host", "host", h.Name, "reason", why)
	r.gate.auditHost(ctx, model.AuditHostWake, h.Name, why)
	if err := r.repo.AppendEvent(ctx, model.Event{Time: now, Kind: EventHostWake, Object: state.HostObject(h.Name),
		Message: fmt.Sprintf("waking host %s: %s", h.Name, why)}); err != nil {
		r.m.log.Warn("write wake event", "host", h.Name, "err", err)
	}
	if err := r.m.cfg.Power.PowerOn(ctx, *nh); err != nil {
		_, rerr := r.repo.UpdateHost(ctx, h.Name, func(x *model.Host) error {
			if x.State != model.HostStandby {
				return state.ErrSkip
			}
			x.Power = &model.HostPower{Desired: model.HostPowerStandby, Since: now, Reason: "power-on failed"}
			return nil
		})
		return errors.Join(fmt.Errorf("controller: power on host %s: %w", h.Name, err), rerr)
	}
	return nil
}

// settleWake marks a woken host ready once its agent has reported.
func (r *reconciler) settleWake(ctx context.Context, name string) error {
	nh, err := r.repo.UpdateHost(ctx, name, func(x *model.Host) error {
		if x.State != model.HostStandby || x.Power == nil || x.Power.Desired != model.HostPowerOn || !x.LastSeen.After(x.Power.Since) {
			return state.ErrSkip
		}
		x.State, x.Power = model.HostReady, nil
		return nil
	})
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("controller: mark woken host %s ready: %w", name, err)
	}
	if nh.State == model.HostReady {
		r.m.log.Info("host awake", "host", name)
	}
	return nil
}
