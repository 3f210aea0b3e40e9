package scheduler

import "github.com/vpool/vpool/internal/model"

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
