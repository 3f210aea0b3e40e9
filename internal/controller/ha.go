package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/vpool/vpool/internal/ha"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/state"
)

// LivenessSource answers the last renewal of a host's liveness that this
// server knows of (ok false: none): by default the host record's LastSeen
// (written by heartbeats that change the record), under the bound the
// alive keys give (leaseBound: heartbeats renew the lease the key is
// attached to). The HA loop never compares the
// answer with its own clock: it stamps, on its clock, the moment it saw
// the answer move, so a source on another server's clock, or one that
// lags, can only make it wait longer, never fence early.
type LivenessSource interface {
	LastRenewal(host string) (time.Time, bool)
}

// recordLiveness is the LivenessSource of the host records in the cache.
type recordLiveness struct{ c *cache }

func (s recordLiveness) LastRenewal(host string) (time.Time, bool) {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	h := s.c.hosts[host]
	if h == nil {
		return time.Time{}, false
	}
	return h.LastSeen, true
}

// leaseBound bounds each host's last renewal by its alive key, which is
// attached to the host's liveness lease (heartbeats renew the lease, on
// whichever server they reach): while the key is there, the host may
// have renewed just now; once it vanished — its lease expired — the last
// renewal was at least the lease's TTL before this server saw it go. It
// knows a host once it saw the key in this term. (The key vanishes by
// expiry, or with the host's record when the host is deleted.)
type leaseBound struct {
	present map[string]bool
	goneAt  map[string]time.Time
}

func (l *leaseBound) bound(c *cache, host string, now time.Time) (time.Time, bool) {
	c.mu.Lock()
	_, here := c.alive[host]
	ttl := c.aliveTTL[host]
	c.mu.Unlock()
	if here {
		l.present[host] = true
		delete(l.goneAt, host)
		return now, true
	}
	if l.present[host] {
		l.present[host] = false
		l.goneAt[host] = now
	}
	g, ok := l.goneAt[host]
	if !ok {
		return time.Time{}, false
	}
	return g.Add(-time.Duration(ttl) * time.Second), true
}

// haState is the HA loop's memory within a term.
type haState struct {
	lease     leaseBound
	seen      map[string]renewal
	confirmed map[string]bool
	open      map[string]*model.HAFailover // failovers under way, by host
	fence     fenceState
	// next is the earliest deadline of the last pass (zero: none): the
	// loop's timer (haWake).
	next time.Time
	// scanned says the pass looked at every host once in this term;
	// watch holds the hosts it looks at on every pass (liveHosts).
	scanned bool
	watch   map[string]bool
}

type renewal struct{ reported, observed time.Time }

func newHAState(now time.Time) *haState {
	return &haState{seen: map[string]renewal{}, confirmed: map[string]bool{}, open: map[string]*model.HAFailover{},
		lease: leaseBound{present: map[string]bool{}, goneAt: map[string]time.Time{}}, watch: map[string]bool{},
		fence: fenceState{calm: now, tried: map[string]bool{}, done: make(chan fenceResult, 16)}}
}

// haPass runs host HA: liveness states from the renewals seen, fence
// commands, then restarts of the fenced hosts' VMs through the gate. It
// leaves the earliest deadline of the hosts in r.ha.next, for the
// loop's timer.
func (r *reconciler) haPass(ctx context.Context) error {
	r.fenceResults()
	hosts := r.liveHosts()
	pol, _ := r.c.policyOf()
	tm := ha.TimingsOf(pol.HAPolicy())
	if g := r.m.cfg.HostDownGrace; g > tm.Suspect {
		d := g - tm.Suspect
		tm.Suspect, tm.Fence, tm.FenceCommand = g, tm.Fence+d, tm.FenceCommand+d
	}
	now := r.now()
	r.pollStoreTerm(ctx, now, false)
	in := r.observeRenewals(hosts, now)
	r.keepWatching(in, tm) // before the steps: a step that fails leaves its host watched
	r.ha.next = time.Time{}
	for _, st := range ha.HostSteps(tm, now, in) {
		if err := r.setHostState(ctx, st.Host, st.From, st.To); err != nil {
			return err
		}
		r.haNote(ctx, st, now)
		for j := range in {
			if in[j].Name == st.Host {
				in[j].State = st.To
			}
		}
	}
	r.startFences(ctx, tm, now, hosts, in)
	r.ha.next = ha.NextDeadline(tm, now, r.ha.fence.calm, in, r.m.cfg.Fencer != nil)
	return r.haRestarts(ctx)
}

// haWake is how long the liveness loop may sleep: until the earliest
// deadline of the last pass (0: none, the periodic pass only).
func (r *reconciler) haWake() time.Duration {
	if r.ha.next.IsZero() {
		return 0
	}
	return max(r.ha.next.Sub(r.now()), time.Millisecond)
}

// liveHosts returns the hosts this pass looks at, sorted by name. The
// first pass of a term, the first after a re-list of the hosts or alive
// keys, and every pass with a LivenessSource of the configuration's
// (which signals no change) look at every host. Otherwise the pass
// looks at the hosts whose record or alive key changed since the last
// (the cache's liveness journal) and at those it still watches
// (keepWatching): a quiet host — ready with its alive key present, or in
// a state HA does not manage — can only move after one of those changes,
// so at rest the pass reads no host. What it decides is what a look at
// every host would (TestLivenessFollowsChanges).
func (r *reconciler) liveHosts() []model.Host {
	dirty, all := r.c.takeLive()
	if all || !r.ha.scanned || r.m.cfg.Liveness != nil {
		r.ha.scanned, r.ha.watch = true, map[string]bool{}
		hosts, _ := r.c.hostView()
		return hosts
	}
	if len(dirty) == 0 && len(r.ha.watch) == 0 {
		return nil
	}
	if dirty == nil {
		dirty = make(map[string]bool, len(r.ha.watch))
	}
	for h := range r.ha.watch {
		dirty[h] = true
	}
	hosts := r.c.hostsNamed(dirty)
	if len(hosts) < len(dirty) { // some were deleted: watch them no more
		for _, h := range hosts {
			delete(dirty, h.Name)
		}
		for h := range dirty {
			delete(r.ha.watch, h)
		}
	}
	return hosts
}

// keepWatching keeps in the watch set the hosts of in that may move
// without a change of their record or alive key: those whose renewal
// ages (no alive key present) and those in a state HA manages other
// than ready. A host deleted from the cache drops out with its record's
// change.
func (r *reconciler) keepWatching(in []ha.Host, tm ha.Timings) {
	for _, h := range in {
		quiet := false
		switch h.State {
		case model.HostReady:
			quiet = r.ha.lease.present[h.Name] && tm.Suspect > 0
		case model.HostSuspect, model.HostFailed, model.HostDown, model.HostFenced:
		default:
			quiet = true // an operator's or the power controller's state
		}
		if quiet {
			delete(r.ha.watch, h.Name)
		} else {
			r.ha.watch[h.Name] = true
		}
	}
}

// observeRenewals bounds each host's last renewal on this server's clock.
// The alive keys (leaseBound) give the bound once a host's key was seen
// in this term. Otherwise the source's answer is stamped as it is first
// seen to move (and a host first seen in this term is stamped now: a new
// leader waits a whole fence time before it fences anyone).
func (r *reconciler) observeRenewals(hosts []model.Host, now time.Time) []ha.Host {
	src := r.m.cfg.Liveness
	if src == nil {
		src = recordLiveness{r.c}
	}
	out := make([]ha.Host, 0, len(hosts))
	for _, h := range hosts {
		rep, _ := src.LastRenewal(h.Name)
		s, known := r.ha.seen[h.Name]
		if !known || rep.After(s.reported) {
			s = renewal{reported: rep, observed: now}
			r.ha.seen[h.Name] = s
		}
		last := s.observed
		if b, ok := r.ha.lease.bound(r.c, h.Name, now); ok {
			last = b
		}
		out = append(out, ha.Host{Name: h.Name, State: h.State, LastRenewal: last,
			FenceConfirmed: r.ha.confirmed[h.Name], FenceTried: r.ha.fence.tried[h.Name]})
	}
	return out
}

// haNote keeps the failover record of a host up to date.
func (r *reconciler) haNote(ctx context.Context, st ha.Step, now time.Time) {
	f := r.ha.open[st.Host]
	switch st.To {
	case model.HostSuspect:
		r.ha.open[st.Host] = &model.HAFailover{Host: st.Host, LastRenewal: r.ha.seen[st.Host].observed, DetectedAt: now}
	case model.HostFenced:
		if f == nil {
			f = &model.HAFailover{Host: st.Host, LastRenewal: r.ha.seen[st.Host].observed}
			r.ha.open[st.Host] = f
		}
		f.FencedAt, f.FenceBy = now, "timeout"
		if r.ha.confirmed[st.Host] {
			f.FenceBy = "command"
		}
		r.m.log.Warn("host fenced", "host", st.Host, "reason", st.Reason)
		r.gate.auditHost(ctx, model.AuditHostFenced, st.Host, "fenced by "+f.FenceBy+": "+st.Reason)
	case model.HostReady:
		if f != nil && !f.FencedAt.IsZero() {
			if err := r.repo.RecordFailover(ctx, *f); err != nil {
				r.m.log.Warn("recording a failover", "host", st.Host, "err", err)
			}
		}
		delete(r.ha.open, st.Host)
		delete(r.ha.confirmed, st.Host)
		delete(r.ha.fence.tried, st.Host)
	}
}

// haRestarts restarts the VMs of fenced hosts elsewhere (ha.PlanRestarts,
// committed by the gate) and marks those that cannot restart failed,
// with the reason.
func (r *reconciler) haRestarts(ctx context.Context) error {
	fenced := r.c.fencedHosts()
	if len(fenced) == 0 {
		return nil
	}
	vms := r.c.vmList(func(v *model.VM) bool {
		return fenced[v.Status.Host] != nil && v.DeletedAt == nil && v.Status.Migration == "" &&
			!(v.Status.Phase == model.PhaseFailed && v.Status.HAReason != "")
	})
	if len(vms) == 0 {
		r.closeFailovers(ctx, fenced)
		return nil
	}
	byKey := make(map[string]*model.VM, len(vms))
	in := make([]ha.VM, 0, len(vms))
	for _, v := range vms {
		byKey[v.Key()] = v
		in = append(in, ha.VM{Key: v.Key(), Host: v.Status.Host, Spec: &v.Spec, Pools: fenced[v.Status.Host].Pools})
	}
	p, err := r.restartPlacer()
	if err != nil {
		return err
	}
	plan := ha.PlanRestarts(in, p)
	var errs []error
	for len(plan.Restarts) > 0 {
		n := min(len(plan.Restarts), haBatch)
		if err := r.commitRestarts(ctx, plan.Restarts[:n], byKey, fenced); err != nil {
			errs = append(errs, err)
			break
		}
		plan.Restarts = plan.Restarts[n:]
	}
	for _, s := range plan.Stuck {
		if err := r.markStuck(ctx, byKey[s.VM], s.Reason); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// haBatch is how many restarts share a transaction (a VM, and at most
// two allocations, each: well under etcd's 128 operations).
const haBatch = 40

func (r *reconciler) commitRestarts(ctx context.Context, rs []ha.Restart, byKey map[string]*model.VM, fenced map[string]*model.Host) error {
	items := make([]state.HARestart, 0, len(rs))
	for _, x := range rs {
		items = append(items, state.HARestart{VM: byKey[x.VM], To: x.To})
	}
	out, err := r.gate.restart(ctx, items, fenced)
	if err != nil {
		return err
	}
	now := r.now()
	for _, v := range out.VMs {
		from := byKey[v.Key()].Status.Host
		if f := r.ha.open[from]; f != nil {
			f.Restarted++
			f.RestartedAt = now
		}
		rec := decision(model.AuditHARestart, v, v.Status.Host, "host "+from+" failed and was fenced")
		rec.From = from
		r.gate.record(ctx, rec)
	}
	r.m.log.Info("HA restarted VMs elsewhere", "vms", len(out.VMs))
	return nil
}

// markStuck leaves a VM that cannot restart failed, with the reason.
func (r *reconciler) markStuck(ctx context.Context, vm *model.VM, why string) error {
	if f := r.ha.open[vm.Status.Host]; f != nil {
		f.Stuck = append(f.Stuck, model.HAStuck{VM: vm.Key(), Reason: why})
	}
	changed := false
	_, err := r.repo.UpdateVM(ctx, vm.Project, vm.Name, func(v *model.VM) error {
		if v.Status.Host != vm.Status.Host || (v.Status.Phase == model.PhaseFailed && v.Status.HAReason == why) {
			changed = false
			return state.ErrSkip
		}
		v.Status.Phase, v.Status.HAReason = model.PhaseFailed, why
		v.Status.LastError = fmt.Sprintf("host %s failed; HA cannot restart the VM: %s", vm.Status.Host, why)
		changed = true
		return nil
	})
	if err != nil && !errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("controller: mark %s failed: %w", vm.Key(), err)
	}
	if err == nil && changed {
		rec := decision(model.AuditHARestart, vm, vm.Status.Host, "host "+vm.Status.Host+" failed; HA cannot restart the VM: "+why)
		rec.Outcome = "failed"
		r.gate.record(ctx, rec)
	}
	return nil
}

// closeFailovers stores the failovers of fenced hosts that have no VM
// left to restart.
func (r *reconciler) closeFailovers(ctx context.Context, fenced map[string]*model.Host) {
	names := make([]string, 0, len(fenced))
	for n := range fenced {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f := r.ha.open[n]
		if f == nil || f.FencedAt.IsZero() {
			continue
		}
		if err := r.repo.RecordFailover(ctx, *f); err != nil {
			r.m.log.Warn("recording a failover", "host", n, "err", err)
			continue
		}
		delete(r.ha.open, n)
	}
}

// restartPlacer is an ha.Placer over the scheduler and a snapshot of the
// cache: every filter and score plugin, the VM lifted off its old host.
func (r *reconciler) restartPlacer() (*schedPlacer, error) {
	pol, _ := r.c.policyOf()
	hosts, _ := r.c.hostView()
	allocs := make([]model.Allocation, 0, len(hosts))
	for _, h := range hosts {
		a := r.c.allocOf(h.Name)
		a.Host = h.Name
		allocs = append(allocs, a)
	}
	snap, err := scheduler.NewSnapshot(pol, hosts, allocs)
	if err != nil {
		return nil, fmt.Errorf("controller: HA snapshot: %w", err)
	}
	s, err := scheduler.New(pol)
	if err != nil {
		return nil, fmt.Errorf("controller: HA scheduler: %w", err)
	}
	return &schedPlacer{s: s, snap: snap}, nil
}

type schedPlacer struct {
	s    *scheduler.Scheduler
	snap *scheduler.Snapshot
}

var _ ha.Placer = (*schedPlacer)(nil)

func (p *schedPlacer) Place(vm ha.VM) (string, string) {
	_ = p.snap.Remove(vm.Host, vm.Key, vm.Spec) // lifted off its fenced host (unknown host: nothing to lift)
	d := p.s.Place(p.snap, scheduler.Request{Key: vm.Key, Spec: vm.Spec})
	if d.Err != nil {
		return "", d.Err.Error()
	}
	return d.Host, ""
}

func (p *schedPlacer) Assume(vm ha.VM, host string) { _ = p.snap.AssumeVM(vm.Key, vm.Spec, host) }
