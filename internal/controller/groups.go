package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/lb"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scaling"
	"github.com/vpool/vpool/internal/state"
)

// VMUsage is where the scaling groups' controller reads its members' CPU
// use: percent of the VM's vCPUs, and whether a fresh measurement
// exists. The default reads the UsageView (Config.Usage) or, without one,
// the usage agents report into VM records;
// another source (a leader-side usage cache) plugs in through
// Config.VMUsage.
type VMUsage interface {
	VMCPU(vm *model.VM, now time.Time) (percent float64, ok bool)
}

// usageFreshness is how old a reported usage may be and still count.
const usageFreshness = 30 * time.Second

// recordUsage reads the usage stored in VM records.
type recordUsage struct{}

func (recordUsage) VMCPU(vm *model.VM, now time.Time) (float64, bool) {
	if vm.Status.ObservedAt.IsZero() || now.Sub(vm.Status.ObservedAt) > usageFreshness || vm.Spec.VCPUs <= 0 {
		return 0, false
	}
	return vm.Status.Usage.CPUPercent / float64(vm.Spec.VCPUs), true
}

// viewUsageFreshness is how old usage answered by a UsageView may be:
// usage that reaches the leader through another server's samples is up
// to one sample interval (30 s by default) older than the heartbeat that
// carried it.
const viewUsageFreshness = 2 * usageFreshness

// viewUsage reads members' CPU from the UsageView (heartbeats no longer
// write usage into VM records), or from the record when it is fresher.
type viewUsage struct{ v UsageView }

func (u viewUsage) VMCPU(vm *model.VM, now time.Time) (float64, bool) {
	cur, at, ok := u.v.VMUsage(vm.Key())
	if !ok || !at.After(vm.Status.ObservedAt) {
		return recordUsage{}.VMCPU(vm, now)
	}
	if now.Sub(at) > viewUsageFreshness || vm.Spec.VCPUs <= 0 {
		return 0, false
	}
	return cur.CPUPercent / float64(vm.Spec.VCPUs), true
}

// groups is the scaling groups' controller pass. For each group it
// moves members through their states (pending → in-service when the VM
// runs; draining → deleting once no balancer serves it; gone when the
// VM is), asks internal/scaling for a plan and applies it: new members
// are VMs created through the state layer like any other create (quota
// admission included) with the group's label and anti-affinity, and
// placed by the scheduler through the gate; members taken out drain
// from the group's balancers first. Every decision is an event with its
// reason.
func (r *reconciler) groups(ctx context.Context) error {
	gs, err := r.repo.ListGroups(ctx, "")
	if err != nil || len(gs) == 0 {
		return err
	}
	lbs, err := r.repo.ListLBs(ctx, "")
	if err != nil {
		return err
	}
	projects := map[string]bool{}
	for _, g := range gs {
		projects[g.Project] = true
	}
	vms := r.c.cachedVMs(func(vm *model.VM) bool { return projects[vm.Project] })
	var errs []error
	for _, g := range gs {
		if err := r.group(ctx, g, lbs, vms); err != nil {
			if errors.Is(err, state.ErrNotLeader) {
				return err
			}
			errs = append(errs, fmt.Errorf("scaling group %s: %w", g.Key(), err))
		}
	}
	return errors.Join(errs...)
}

func (r *reconciler) group(ctx context.Context, g *model.ScalingGroup, lbs []*model.LoadBalancer, vms map[string]*model.VM) error {
	now := r.now()
	st := g.Status
	st.Members = slices.Clone(g.Status.Members)
	evs, err := r.advanceMembers(ctx, g, &st, lbs, vms, now)
	if err != nil {
		return err
	}
	if g.DeletedAt != nil && len(st.Members) == 0 {
		return r.repo.FinishDeleteGroup(ctx, g)
	}
	plan := r.decide(g, &st, vms, now)
	for _, name := range plan.Drain {
		for i := range st.Members {
			if m := &st.Members[i]; m.VM == name {
				m.State, m.Since = model.GroupMemberDraining, now
				evs = append(evs, model.Event{Time: now, Kind: "group.member-draining", Message: fmt.Sprintf("member %s leaves group %s: %s", name, g.Name, plan.Reason)})
			}
		}
	}
	st.Error = ""
	for range plan.Create {
		name, err := r.createMember(ctx, g, &st)
		if err != nil {
			st.Error = err.Error()
			if g.Status.Error != st.Error {
				evs = append(evs, model.Event{Time: now, Kind: "group.error", Message: fmt.Sprintf("group %s cannot create a member: %v", g.Name, err)})
			}
			break
		}
		st.Members = append(st.Members, model.GroupMember{VM: name, State: model.GroupMemberPending, Since: now})
		evs = append(evs, model.Event{Time: now, Kind: "group.member-created", Message: fmt.Sprintf("member %s of group %s created: %s", name, g.Name, plan.Reason)})
	}
	if plan.Kind != scaling.KindNone && plan.Kind != scaling.KindRepair && plan.Kind != scaling.KindReplace {
		evs = append(evs, model.Event{Time: now, Kind: "group." + plan.Kind, Message: fmt.Sprintf("group %s: %s", g.Name, plan.Reason)})
	}
	if plan.Reason != "" {
		st.Reason = plan.Reason
	}
	st.Desired = plan.Desired
	if plan.HasCPU {
		st.CPU = float64(int(plan.CPU*10)) / 10
	}
	if plan.ScaledOut {
		st.LastScaleOut = &now
	}
	if plan.ScaledIn {
		st.LastScaleIn = &now
	}
	if reflect.DeepEqual(st, g.Status) {
		return nil
	}
	committed := false
	_, err = r.repo.UpdateGroup(ctx, g.Project, g.Name, func(cur *model.ScalingGroup) ([]model.Event, error) {
		committed = false
		if cur.Revision != g.Revision {
			return nil, state.ErrSkip // changed since listed: the next pass adopts what was created
		}
		cur.Status = st
		committed = true
		return evs, nil
	})
	if err == nil && committed && plan.Kind != scaling.KindNone {
		r.gate.auditGroup(ctx, g, plan.Kind, plan.Reason)
	}
	return err
}

// decide asks internal/scaling for a plan; a group being deleted takes
// out every live member.
func (r *reconciler) decide(g *model.ScalingGroup, st *model.GroupStatus, vms map[string]*model.VM, now time.Time) scaling.Plan {
	usage := r.m.cfg.VMUsage
	switch {
	case usage == nil && r.m.cfg.Usage != nil:
		usage = viewUsage{r.m.cfg.Usage}
	case usage == nil:
		usage = recordUsage{}
	}
	var ms []scaling.Member
	var live []string
	for _, m := range st.Members {
		sm := scaling.Member{VM: m.VM, State: m.State, Since: m.Since}
		if vm := vms[g.Project+"/"+m.VM]; vm != nil {
			sm.Phase = vm.Status.Phase
			if vm.DeletedAt != nil {
				sm.Phase = model.PhaseDeleting
			}
			sm.CPU, sm.HasCPU = usage.VMCPU(vm, now)
		}
		if m.State == model.GroupMemberPending || m.State == model.GroupMemberInService {
			live = append(live, m.VM)
		}
		ms = append(ms, sm)
	}
	if g.DeletedAt != nil {
		return scaling.Plan{Drain: live, Kind: scaling.KindNone, Reason: "the group is being deleted"}
	}
	return scaling.Decide(scaling.Input{Now: now, Spec: g.Spec, Status: *st, Members: ms})
}

// advanceMembers adopts VMs labelled as the group's that it does not
// list (created by a pass whose status write was lost), and moves
// members on: pending → in-service when their VM runs; draining →
// deleting once no balancer serves them (the VM is deleted then); and
// drops members whose VM is gone.
func (r *reconciler) advanceMembers(ctx context.Context, g *model.ScalingGroup, st *model.GroupStatus, lbs []*model.LoadBalancer,
	vms map[string]*model.VM, now time.Time) ([]model.Event, error) {
	var evs []model.Event
	listed := map[string]bool{}
	for _, m := range st.Members {
		listed[m.VM] = true
	}
	for _, k := range sortedKeys(vms) {
		vm := vms[k]
		if vm.Project == g.Project && vm.Spec.Labels[model.GroupLabel] == g.Name && !listed[vm.Name] && vm.DeletedAt == nil {
			st.Members = append(st.Members, model.GroupMember{VM: vm.Name, State: model.GroupMemberPending, Since: vm.CreatedAt})
			evs = append(evs, model.Event{Time: now, Kind: "group.member-adopted", Message: fmt.Sprintf("VM %s carries group %s's label: adopted", vm.Name, g.Name)})
		}
	}
	out := st.Members[:0]
	for _, m := range st.Members {
		vm := vms[g.Project+"/"+m.VM]
		switch m.State {
		case model.GroupMemberPending:
			if vm != nil && vm.Status.Phase == model.PhaseRunning && vm.DeletedAt == nil {
				m.State, m.Since = model.GroupMemberInService, now
				evs = append(evs, model.Event{Time: now, Kind: "group.member-in-service", Message: fmt.Sprintf("member %s of group %s runs on %s: in service", m.VM, g.Name, vm.Status.Host)})
			}
		case model.GroupMemberDraining:
			if servedBy(lbs, g.Project, m.VM) != "" {
				break
			}
			if err := r.deleteMember(ctx, g.Project, m.VM, vm); err != nil {
				return nil, err
			}
			m.State, m.Since = model.GroupMemberDeleting, now
			evs = append(evs, model.Event{Time: now, Kind: "group.member-deleted", Message: fmt.Sprintf("member %s of group %s drained from its balancers: deleting it", m.VM, g.Name)})
		case model.GroupMemberDeleting:
			if vm == nil {
				continue
			}
		}
		out = append(out, m)
	}
	st.Members = out
	return evs, nil
}

// servedBy names a balancer of project that still serves vm ("" if none).
func servedBy(lbs []*model.LoadBalancer, project, vm string) string {
	for _, b := range lbs {
		if b.Project == project && lb.Serving(b.Status.Members, vm) {
			return b.Name
		}
	}
	return ""
}

// deleteMember deletes a member's VM as the API does: at once when it is
// on no host, else by asking its host to remove it.
func (r *reconciler) deleteMember(ctx context.Context, project, name string, vm *model.VM) error {
	if vm == nil {
		return nil
	}
	now := r.now()
	unplaced := errors.New("unplaced")
	_, err := r.repo.UpdateVM(ctx, project, name, func(v *model.VM) error {
		if v.Status.Host == "" {
			return unplaced
		}
		if v.DeletedAt != nil {
			return state.ErrSkip
		}
		v.DeletedAt, v.Status.Phase = &now, model.PhaseDeleting
		return nil
	})
	switch {
	case errors.Is(err, unplaced):
		return r.repo.FinishDeleteVM(ctx, project, name)
	case errors.Is(err, state.ErrNotFound):
		return nil
	}
	return err
}

// createMember creates the group's next member: the template with the
// group's label and anti-affinity, each NIC with its own MAC and an
// address from IPAM (released again when the create fails).
func (r *reconciler) createMember(ctx context.Context, g *model.ScalingGroup, st *model.GroupStatus) (string, error) {
	for range 20 {
		if st.Next < 1 {
			st.Next = 1
		}
		name := g.Name + "-" + strconv.Itoa(st.Next)
		st.Next++
		err := r.createVM(ctx, g, name)
		if errors.Is(err, state.ErrExists) {
			continue
		}
		return name, err
	}
	return "", fmt.Errorf("controller: no free member name for group %s", g.Name)
}

func (r *reconciler) createVM(ctx context.Context, g *model.ScalingGroup, name string) error {
	spec := g.Spec.Template
	spec.Labels = maps.Clone(spec.Labels)
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels[model.GroupLabel] = g.Name
	spec.Disks, spec.NICs = slices.Clone(spec.Disks), slices.Clone(spec.NICs)
	spec.Placement.AffinityGroup = "group-" + g.Name
	spec.Placement.Affinity = model.AntiAffinitySoft
	if g.Spec.AntiAffinity == "hard" {
		spec.Placement.Affinity = model.AntiAffinityHard
	}
	for i := range spec.NICs {
		spec.NICs[i].MAC = memberMAC()
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("controller: the group's template: %w", err)
	}
	type taken struct{ network, ip, owner string }
	var got []taken
	release := func() {
		for _, t := range got {
			_ = r.repo.ReleaseAddress(context.WithoutCancel(ctx), g.Project, t.network, t.ip, t.owner)
		}
	}
	for i := range spec.NICs {
		n := &spec.NICs[i]
		if n.Network == "" {
			continue
		}
		if _, err := r.repo.GetNetwork(ctx, g.Project, n.Network); errors.Is(err, state.ErrNotFound) {
			continue // a host network
		}
		owner := model.NICOwner(name, n.Name)
		a, err := r.repo.AllocateAddress(ctx, g.Project, n.Network, owner, n.MAC, "")
		if err != nil {
			release()
			return fmt.Errorf("controller: an address on network %s: %w", n.Network, err)
		}
		n.IP = a.IP
		got = append(got, taken{n.Network, a.IP, owner})
	}
	_, err := r.repo.CreateVM(ctx, &model.VM{Meta: model.Meta{Name: name, Project: g.Project}, Spec: spec})
	if err != nil {
		release()
	}
	return err
}

// memberMAC is a locally administered unicast MAC (0a:...), as the API
// gives NICs.
func memberMAC() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("0a:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
}
