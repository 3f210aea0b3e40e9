package server

import (
	"context"
	"fmt"
	"net/http"
	"sort"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/ha"
	"github.com/vpool/vpool/internal/model"
)

// haStatus answers vpool ha status: hosts by state, VMs by HA level,
// those that cannot restart and why, the failover reserve, the last
// failovers (admin: it names hosts).
func (s *Server) haStatus(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	ctx := r.Context()
	pol, _, err := s.repo.GetPolicy(ctx)
	if err != nil {
		return err
	}
	hosts, _, err := s.repo.ListHosts(ctx)
	if err != nil {
		return err
	}
	allocs, _, err := s.repo.ListAllocations(ctx)
	if err != nil {
		return err
	}
	vms, _, err := s.repo.ListVMs(ctx, "")
	if err != nil {
		return err
	}
	st, _, err := s.repo.GetHAState(ctx)
	if err != nil {
		return err
	}
	hp := pol.HAPolicy()
	out := api.HAStatus{Policy: hp, Hosts: map[string]int{}, Protected: map[string]int{}, Failovers: st.Failovers}
	pools := map[string][]model.StoragePoolRef{}
	for _, h := range hosts {
		out.Hosts[string(h.State)]++
		pools[h.Name] = h.Pools
	}
	for _, v := range vms {
		if v.DeletedAt != nil || v.Status.Host == "" {
			continue
		}
		level, why := ha.Level(&v.Spec, pools[v.Status.Host])
		if level == model.HAOff {
			out.Unprotected = append(out.Unprotected, model.HAStuck{VM: v.Key(), Reason: why})
			continue
		}
		out.Protected[level]++
	}
	sort.Slice(out.Unprotected, func(i, j int) bool { return out.Unprotected[i].VM < out.Unprotected[j].VM })
	res := ha.CheckReserve(ha.Loads(pol, hosts, allocs, vms), hp.TolerateHostFailures, ha.Pending(vms))
	out.Reserve = api.HAReserve{Tolerates: res.Tolerates, OK: res.OK, Need: res.Need, Spare: res.Spare, Worst: res.Worst}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// checkHAReserve answers a dry run whose VMs would break the cluster
// policy's "tolerate N host failures" (ha.tolerateHostFailures). A real
// create is judged inside its admission transaction instead (reserveCheck,
// state.ReserveCheck), where two creates at once cannot both pass.
func (s *Server) checkHAReserve(ctx context.Context, vms []*model.VM, dryRun bool) error {
	if !dryRun {
		return nil
	}
	pol, _, err := s.repo.GetPolicy(ctx)
	if err != nil {
		return err
	}
	n := pol.HAPolicy().TolerateHostFailures
	if n <= 0 {
		return nil
	}
	hosts, _, err := s.repo.ListHosts(ctx)
	if err != nil {
		return err
	}
	allocs, _, err := s.repo.ListAllocations(ctx)
	if err != nil {
		return err
	}
	all, _, err := s.repo.ListVMs(ctx, "")
	if err != nil {
		return err
	}
	var add model.Resources
	for _, v := range vms {
		d := v.Spec.Demand()
		add.CPUs, add.Memory = add.CPUs+d.CPUs, add.Memory+d.Memory
	}
	if err := reserveCheck(pol, n, hosts, allocs, all)(add); err != nil {
		return errf(http.StatusConflict, api.CodeConflict, "ha.tolerateHostFailures", "%s", fmt.Sprint(err))
	}
	return nil
}

// reserveCheck is the failover reserve's judge in admissions
// (state.ReserveCheck): the protected VMs of the n worst hosts must still
// fit on the others once the VMs not yet placed and add are placed too.
func reserveCheck(pol model.Policy, n int, hosts []*model.Host, allocs map[string]*model.Allocation, vms []*model.VM) func(add model.Resources) error {
	loads := ha.Loads(pol, hosts, allocs, vms)
	pending := ha.Pending(vms)
	return func(add model.Resources) error {
		return ha.CheckReserve(loads, n, pending.Add(add)).Err()
	}
}
