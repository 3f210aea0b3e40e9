package controller

import (
	"reflect"
	"sync"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
)

// SchedulerPlacer is the Placer over internal/scheduler: every filter and
// score plugin, with explanations. It builds one scheduler.Snapshot per
// controller Snapshot (per Epoch) and then applies only the allocations
// the controller changed since (Snapshot.Changed), so a pass placing many
// VMs costs one snapshot build, not one per VM. Safe for concurrent use.
type SchedulerPlacer struct {
	opts []scheduler.Option
	// Exhaustive examines every host for every decision (slower; the
	// explanation then counts every host): for dry runs.
	Exhaustive bool

	mu     sync.Mutex
	sched  *scheduler.Scheduler
	policy model.Policy
	snap   *scheduler.Snapshot
	epoch  uint64
	seen   int // len(Changed) already applied to snap
}

var _ BatchPlacer = (*SchedulerPlacer)(nil)

// NewSchedulerPlacer returns a Placer over internal/scheduler; opts are
// passed to scheduler.New (plugins, sampling, candidates).
func NewSchedulerPlacer(opts ...scheduler.Option) *SchedulerPlacer {
	return &SchedulerPlacer{opts: opts}
}

// fork returns a new SchedulerPlacer with the same options and its own
// cached snapshot, for a second caller (the power controller) that would
// otherwise throw away the first one's at every call.
func (p *SchedulerPlacer) fork() *SchedulerPlacer {
	return &SchedulerPlacer{opts: p.opts, Exhaustive: p.Exhaustive}
}

// Place implements Placer.
func (p *SchedulerPlacer) Place(s *Snapshot, vm *model.VM) (string, *model.Explanation) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.sync(s); err != nil {
		return "", &model.Explanation{Time: s.Now, Hosts: len(s.Hosts), Summary: "cannot schedule: " + err.Error()}
	}
	d := p.sched.Place(p.snap, scheduler.Request{Key: vm.Key(), Spec: &vm.Spec, Exhaustive: p.Exhaustive})
	expl := d.Explanation
	if expl == nil {
		expl = &model.Explanation{Hosts: len(s.Hosts)}
	}
	expl.Time = s.Now
	if d.Err != nil {
		expl.Summary = "cannot schedule: " + d.Err.Error()
		return "", expl
	}
	return d.Host, expl
}

// PlaceBatch implements BatchPlacer with scheduler.PlaceBatch: in order,
// each VM seeing the ones before it, hard groups all or nothing. The
// decisions are forgotten again before it returns, so the cached
// snapshot only ever moves with what the controller committed.
func (p *SchedulerPlacer) PlaceBatch(s *Snapshot, vms []*model.VM) []Choice {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Choice, len(vms))
	if err := p.sync(s); err != nil {
		for i := range out {
			out[i].Explanation = &model.Explanation{Time: s.Now, Hosts: len(s.Hosts), Summary: "cannot schedule: " + err.Error()}
		}
		return out
	}
	reqs := make([]scheduler.Request, len(vms))
	for i, vm := range vms {
		reqs[i] = scheduler.Request{Key: vm.Key(), Spec: &vm.Spec, Exhaustive: p.Exhaustive}
	}
	for i, d := range p.sched.PlaceBatch(p.snap, reqs) {
		if d.Placed() {
			_ = p.snap.Forget(d.Key) // PlaceBatch assumed it: cannot fail
		}
		expl := d.Explanation
		if expl == nil {
			expl = &model.Explanation{Hosts: len(s.Hosts)}
		}
		expl.Time = s.Now
		if d.Err != nil {
			expl.Summary = "cannot schedule: " + d.Err.Error()
			out[i] = Choice{Explanation: expl}
			continue
		}
		out[i] = Choice{Host: d.Host, Explanation: expl}
	}
	return out
}

// sync brings the scheduler snapshot up to date with s.
func (p *SchedulerPlacer) sync(s *Snapshot) error {
	if p.sched == nil || !reflect.DeepEqual(p.policy, s.Policy) {
		sched, err := scheduler.New(s.Policy, p.opts...)
		if err != nil {
			return err
		}
		p.sched, p.policy, p.snap = sched, s.Policy, nil
	}
	if p.snap == nil || s.Epoch == 0 || s.Epoch != p.epoch {
		allocs := make([]model.Allocation, 0, len(s.Allocs))
		for _, name := range sortedKeys(s.Allocs) {
			a := s.Allocs[name]
			a.Host = name
			allocs = append(allocs, a)
		}
		snap, err := scheduler.NewSnapshot(s.Policy, s.Hosts, allocs)
		if err != nil {
			return err
		}
		p.snap, p.epoch, p.seen = snap, s.Epoch, len(s.Changed)
	}
	for _, h := range s.Changed[p.seen:] {
		a := s.Allocs[h]
		a.Host = h
		if err := p.snap.SetAllocation(a); err != nil {
			return err
		}
	}
	p.seen = len(s.Changed)
	return nil
}
