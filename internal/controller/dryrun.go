package controller

import (
	"context"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// DryRunner answers where a VM would be placed and why, from the stored
// state, changing nothing. Its Place method is the server's dry-run
// Placer. It may run on any server, leader or not.
type DryRunner struct {
	repo   *state.Repo
	placer Placer
	now    func() time.Time
}

// NewDryRunner returns a DryRunner over st. placer nil means an
// exhaustive SchedulerPlacer of its own (never share the controller's: a
// dry run would throw away its cached snapshot). clock nil means time.Now.
func NewDryRunner(st store.Store, placer Placer, clock func() time.Time) *DryRunner {
	return newDryRunner(state.New(st, clock), placer, clock)
}

// newDryRunner reads through repo (a controller's: the term's).
func newDryRunner(repo *state.Repo, placer Placer, clock func() time.Time) *DryRunner {
	if placer == nil {
		sp := NewSchedulerPlacer()
		sp.Exhaustive = true
		placer = sp
	}
	if clock == nil {
		clock = time.Now
	}
	return &DryRunner{repo: repo, placer: placer, now: clock}
}

// Place implements the server's dry-run Placer.
func (d *DryRunner) Place(ctx context.Context, vm *model.VM) (api.DryRunResponse, error) {
	s, err := d.snapshot(ctx)
	if err != nil {
		return api.DryRunResponse{}, err
	}
	host, expl := d.placer.Place(s, vm)
	return api.DryRunResponse{Host: host, Fits: host != "", Explanation: expl}, nil
}

// PlaceBatch answers a batch dry run as the scheduling controller would
// place the batch: in order, each VM seeing the ones before it, hard
// affinity and anti-affinity groups all or nothing (when the Placer is a
// BatchPlacer; otherwise each VM alone).
func (d *DryRunner) PlaceBatch(ctx context.Context, vms []*model.VM) ([]api.DryRunResponse, error) {
	s, err := d.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.DryRunResponse, len(vms))
	if bp, ok := d.placer.(BatchPlacer); ok {
		for i, c := range bp.PlaceBatch(s, vms) {
			out[i] = api.DryRunResponse{Host: c.Host, Fits: c.Host != "", Explanation: c.Explanation}
		}
		return out, nil
	}
	for i, vm := range vms {
		host, expl := d.placer.Place(s, vm)
		out[i] = api.DryRunResponse{Host: host, Fits: host != "", Explanation: expl}
	}
	return out, nil
}

// snapshot reads hosts, allocations and policy from the store.
func (d *DryRunner) snapshot(ctx context.Context) (*Snapshot, error) {
	hosts, _, err := d.repo.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	allocs, _, err := d.repo.ListAllocations(ctx)
	if err != nil {
		return nil, err
	}
	pol, _, err := d.repo.GetPolicy(ctx)
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Hosts: make([]model.Host, 0, len(hosts)), Allocs: make(map[string]model.Allocation, len(allocs)), Policy: pol, Now: d.now()}
	for _, h := range hosts {
		s.Hosts = append(s.Hosts, *h)
	}
	for name, a := range allocs {
		s.Allocs[name] = *a
	}
	return s, nil
}
