package scheduler

import (
	"fmt"
	"slices"

	"github.com/vpool/vpool/internal/model"
)

// ClusterView returns a scheduler for policy and its snapshot of the
// whole cluster: every host and every allocation record (keyed by host
// name, read in name order). It is the view the server's balancer and
// migration pre-checks build from the store; a move planner's hook is
// BalanceCheck over it.
func ClusterView(policy model.Policy, hosts []model.Host, allocs map[string]model.Allocation) (*Scheduler, *Snapshot, error) {
	s, err := New(policy)
	if err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(allocs))
	for name := range allocs {
		names = append(names, name)
	}
	slices.Sort(names)
	list := make([]model.Allocation, 0, len(allocs))
	for _, name := range names {
		a := allocs[name]
		a.Host = name
		list = append(list, a)
	}
	snap, err := NewSnapshot(policy, hosts, list)
	if err != nil {
		return nil, nil, fmt.Errorf("scheduler: cluster view: %w", err)
	}
	return s, snap, nil
}

// BalanceCheck returns the feasibility hook of one balancing round
// (internal/balance's Feasibility) over snap, the scheduler's view of
// the whole cluster (every host, every allocation): the planner's host i
// is hosts[i] and its VM v is vms[v], which runs on the host its
// Status.Host names (a migrating VM: its source; the target's allocation
// holds it already). The server's balancer and the simulator both build
// their hook with this function, so a planner sees the same rules in
// both. The check works on its own copy of snap.
func (s *Scheduler) BalanceCheck(snap *Snapshot, hosts []model.Host, vms []*model.VM) *MoveCheck {
	names := make([]string, len(hosts))
	for i := range hosts {
		names[i] = hosts[i].Name
	}
	mv := make([]MoveVM, len(vms))
	for i, vm := range vms {
		mv[i] = MoveVM{Key: vm.Key(), Spec: &vm.Spec, Host: vm.Status.Host}
	}
	return s.NewMoveCheck(snap, names, mv)
}
