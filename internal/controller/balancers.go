package controller

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"time"

	"github.com/vpool/vpool/internal/lb"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// lbDeleteGrace is how long a deleted balancer waits for its host to say
// it stopped serving it before the record and address go anyway.
const lbDeleteGrace = 30 * time.Second

// cachedVMs returns the cached VMs by key (immutable: do not change them).
func (c *cache) cachedVMs(keep func(*model.VM) bool) map[string]*model.VM {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]*model.VM{}
	for k, vm := range c.vms {
		if keep(vm) {
			out[k] = vm
		}
	}
	return out
}

// balancers is the load balancer controller's pass: it places each
// balancer on a host (internal/lb.ChooseHost; moved when its host goes
// away), keeps its members — the VMs it names and the in-service members
// of its scaling groups — and drains those that leave, and finishes
// deletions. The host's agent serves what the record says.
func (r *reconciler) balancers(ctx context.Context) error {
	lbs, err := r.repo.ListLBs(ctx, "")
	if err != nil {
		return err
	}
	if len(lbs) == 0 {
		return r.countBalancers(ctx, lbs)
	}
	groups, err := r.repo.ListGroups(ctx, "")
	if err != nil {
		return err
	}
	hosts, alive := r.c.hostView()
	projects := map[string]bool{}
	for _, b := range lbs {
		projects[b.Project] = true
	}
	vms := r.c.cachedVMs(func(vm *model.VM) bool { return projects[vm.Project] })
	var errs []error
	for _, b := range lbs {
		if err := r.balancer(ctx, b, lbs, groups, hosts, alive, vms); err != nil {
			if errors.Is(err, state.ErrNotLeader) {
				return err
			}
			errs = append(errs, fmt.Errorf("load balancer %s: %w", b.Key(), err))
		}
	}
	// Count what this pass placed and moved.
	if lbs, err = r.repo.ListLBs(ctx, ""); err != nil {
		return errors.Join(append(errs, err)...)
	}
	return errors.Join(append(errs, r.countBalancers(ctx, lbs))...)
}

// countBalancers keeps each host's Balancers at the number of balancers
// placed on it (deleting ones too: their host serves them until it says
// it stopped), so that placement counts their reserve.
func (r *reconciler) countBalancers(ctx context.Context, lbs []*model.LoadBalancer) error {
	count := map[string]int{}
	for _, b := range lbs {
		if b.Status.Host != "" {
			count[b.Status.Host]++
		}
	}
	// Only hosts that hold a count or should: a pass with no balancer
	// anywhere copies no host (it runs on every VM change).
	have := r.c.balancerCounts(count)
	names := make([]string, 0, len(have))
	for name := range have {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		n := count[name]
		if have[name] == n {
			continue
		}
		_, err := r.repo.UpdateHost(ctx, name, func(x *model.Host) error {
			if x.Balancers == n {
				return state.ErrSkip
			}
			x.Balancers = n
			return nil
		})
		if errors.Is(err, state.ErrNotLeader) {
			return err
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			errs = append(errs, fmt.Errorf("host %s: balancers: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (r *reconciler) balancer(ctx context.Context, b *model.LoadBalancer, lbs []*model.LoadBalancer, groups []*model.ScalingGroup,
	hosts []model.Host, alive map[string]bool, vms map[string]*model.VM) error {
	now := r.now()
	if b.DeletedAt != nil {
		o := b.Status.Observed
		stopped := o != nil && o.At.After(*b.DeletedAt) && !o.Running
		if b.Status.Host == "" || !alive[b.Status.Host] || stopped || now.Sub(*b.DeletedAt) > lbDeleteGrace {
			why := "its host stopped serving it"
			if !stopped {
				why = "its host did not answer"
			}
			return r.repo.FinishDeleteLB(ctx, b.Project, b.Name, why)
		}
		return nil
	}
	want := wantedMembers(b, groups, vms)
	host, why, err := r.lbHost(ctx, b, lbs, hosts, alive, want, vms)
	if err != nil {
		return err
	}
	phase := model.LBActive
	if host == "" {
		phase = model.LBPending
	}
	drain := time.Duration(b.Spec.DrainTimeout) * time.Second
	served := func(o *model.LBObserved) *model.LBObserved {
		if host == "" {
			// Served nowhere: nothing is left to drain.
			return &model.LBObserved{At: now.Add(time.Nanosecond)}
		}
		return o
	}
	if members, _ := lb.Reconcile(now, b.Status.Members, want, served(b.Status.Observed), drain); host == b.Status.Host && phase == b.Status.Phase &&
		why == b.Status.Placement && reflect.DeepEqual(members, b.Status.Members) {
		return nil
	}
	// The host's reports change the record too: decide the members again
	// on the record as it is now.
	var placed, from string // the decision to record once committed
	_, err = r.repo.UpdateLB(ctx, b.Project, b.Name, func(cur *model.LoadBalancer) ([]model.Event, error) {
		placed = ""
		if cur.DeletedAt != nil {
			return nil, state.ErrSkip
		}
		members, changes := lb.Reconcile(now, cur.Status.Members, want, served(cur.Status.Observed), drain)
		moved := host != cur.Status.Host
		if !moved && phase == cur.Status.Phase && why == cur.Status.Placement && reflect.DeepEqual(members, cur.Status.Members) {
			return nil, state.ErrSkip
		}
		var evs []model.Event
		if moved {
			kind := "lb.placed"
			if host == "" {
				kind = "lb.unplaced"
			} else if cur.Status.Host != "" {
				kind = "lb.moved"
			}
			evs = append(evs, model.Event{Time: now, Kind: kind, From: cur.Status.Host, To: host, Message: fmt.Sprintf("load balancer %s: %s", b.Name, why)})
			placed, from = kind, cur.Status.Host
			cur.Status.Observed = nil // the new host reports afresh
		}
		for _, c := range changes {
			evs = append(evs, model.Event{Time: now, Kind: "lb.member-" + c.Kind,
				Message: fmt.Sprintf("load balancer %s: member %s (%s) %s: %s", b.Name, c.VM, c.IP, c.Kind, c.Reason)})
		}
		cur.Status.Host, cur.Status.Phase, cur.Status.Placement, cur.Status.Members = host, phase, why, members
		return evs, nil
	})
	if err == nil && placed != "" {
		r.gate.auditLB(ctx, b, placed, from, host, why)
	}
	return err
}

// wantedMembers lists the VMs a balancer should serve now: the running
// VMs it names and the in-service members of its groups, each with its
// address on the balancer's network.
func wantedMembers(b *model.LoadBalancer, groups []*model.ScalingGroup, vms map[string]*model.VM) []lb.Wanted {
	var out []lb.Wanted
	seen := map[string]bool{}
	add := func(name string) {
		vm := vms[b.Project+"/"+name]
		if vm == nil || seen[name] || vm.DeletedAt != nil || vm.Status.Phase != model.PhaseRunning {
			return
		}
		for _, n := range vm.Spec.NICs {
			if n.Network == b.Spec.Network && n.IP != "" {
				seen[name] = true
				out = append(out, lb.Wanted{VM: name, IP: n.IP})
				return
			}
		}
	}
	for _, v := range b.Spec.Members.VMs {
		add(v)
	}
	for _, g := range groups {
		if g.Project != b.Project || (g.Name != b.Spec.Members.Group && g.Spec.LB != b.Name) {
			continue
		}
		for _, m := range g.Status.Members {
			if m.State == model.GroupMemberInService {
				add(m.VM)
			}
		}
	}
	return out
}

// lbHost chooses the balancer's host and says why.
func (r *reconciler) lbHost(ctx context.Context, b *model.LoadBalancer, lbs []*model.LoadBalancer, hosts []model.Host,
	alive map[string]bool, want []lb.Wanted, vms map[string]*model.VM) (string, string, error) {
	n, err := r.repo.GetNetwork(ctx, b.Project, b.Spec.Network)
	if errors.Is(err, store.ErrNotFound) {
		return "", "network " + b.Spec.Network + " does not exist", nil
	}
	if err != nil {
		return "", "", err
	}
	count := map[string]int{}
	for _, o := range lbs {
		if o.Key() != b.Key() && o.DeletedAt == nil && o.Status.Host != "" {
			count[o.Status.Host]++
		}
	}
	members := map[string]int{}
	for _, w := range want {
		if vm := vms[b.Project+"/"+w.VM]; vm != nil && vm.Status.Host != "" {
			members[vm.Status.Host]++
		}
	}
	cands := make([]lb.Host, 0, len(hosts))
	for _, h := range hosts {
		c := lb.Host{Name: h.Name, Balancers: count[h.Name], Members: members[h.Name], CPU: h.Usage.CPUPercent, Unusable: lbUnusable(&h, alive[h.Name])}
		if c.Unusable == "" {
			if ok, why := h.Net.Serves(&n.Spec); !ok {
				c.Unusable = "cannot serve network " + n.Name + ": " + why
			} else if !h.Net.Balancers {
				c.Unusable = "has no HAProxy (Debian haproxy)"
			}
		}
		cands = append(cands, c)
	}
	host, why := lb.ChooseHost(b.Status.Host, cands)
	if host != "" && host == b.Status.Host && b.Status.Placement != "" {
		why = b.Status.Placement // keep the reasons of the choice
	}
	return host, why, nil
}

// lbUnusable says why a host cannot serve balancers ("" when it can).
func lbUnusable(h *model.Host, alive bool) string {
	switch {
	case !alive:
		return "not alive"
	case h.State != model.HostReady:
		return "state " + string(h.State)
	case h.Cordoned:
		return "cordoned"
	case h.Drain != nil:
		return "draining"
	case h.Power != nil && h.Power.Desired == model.HostPowerStandby:
		return "put to standby by the power controller"
	}
	return ""
}
