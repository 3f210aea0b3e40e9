package controller

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
	"github.com/vpool/vpool/internal/state"
)

// MigrationCheck is the outcome of a migration's pre-checks: where the VM
// goes, how, and why there.
type MigrationCheck struct {
	Target      string
	Mode        model.MigrationMode
	Explanation *model.Explanation
}

// refused returns an error wrapping state.ErrRefused.
func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", state.ErrRefused, fmt.Sprintf(format, args...))
}

// migrationMode says how vm can move now, or why it cannot.
func migrationMode(vm *model.VM) (model.MigrationMode, error) {
	switch {
	case vm.DeletedAt != nil:
		return "", refused("VM %s is being deleted", vm.Name)
	case vm.Status.Migration != "":
		return "", refused("VM %s already has migration %s under way", vm.Name, vm.Status.Migration)
	case vm.Status.Host == "":
		return "", refused("VM %s is not placed on any host yet", vm.Name)
	}
	switch vm.Status.Phase {
	case model.PhaseRunning, model.PhasePaused:
		if vm.Spec.Power == model.PowerStopped {
			return "", refused("VM %s is stopping; migrate it once it is stopped", vm.Name)
		}
		return model.MigrationLive, nil
	case model.PhaseStopped, model.PhaseFailed:
		if vm.Status.Phase == model.PhaseStopped && vm.Spec.Power == model.PowerRunning {
			return "", refused("VM %s is starting; migrate it once it runs", vm.Name)
		}
		return model.MigrationCold, nil
	}
	return "", refused("VM %s is %s: only running, paused, stopped or failed VMs can move", vm.Name, vm.Status.Phase)
}

// compatible says why a VM cannot move from src to dst in mode, or "".
// Live migration needs the same driver and accelerator, a target
// hypervisor no older than the source's, and one CPU model (the cluster
// baseline) on both. Whether the target has the VM's networks is the
// scheduler's network filter, which the gate's check of the move runs.
func compatible(src, dst *model.Host, vm *model.VM, mode model.MigrationMode) string {
	if mode != model.MigrationLive || src == nil {
		return ""
	}
	switch {
	case src.Driver != "" && dst.Driver != "" && src.Driver != dst.Driver:
		return fmt.Sprintf("hypervisor drivers differ (%s on %s, %s on %s)", src.Driver, src.Name, dst.Driver, dst.Name)
	case src.Accel != "" && dst.Accel != "" && src.Accel != dst.Accel:
		return fmt.Sprintf("accelerators differ (%s on %s, %s on %s)", src.Accel, src.Name, dst.Accel, dst.Name)
	case src.HypervisorVersion != "" && dst.HypervisorVersion != "" && versionLess(dst.HypervisorVersion, src.HypervisorVersion):
		return fmt.Sprintf("hypervisor %s on %s is older than %s on %s: a running VM can only move to the same or a newer version",
			dst.HypervisorVersion, dst.Name, src.HypervisorVersion, src.Name)
	case src.MachineType != "" && dst.MachineType != "" && src.MachineType != dst.MachineType:
		return fmt.Sprintf("machine types differ (%s on %s, %s on %s): a running VM keeps its machine type; start every agent with the same --machine (e.g. %s)",
			src.MachineType, src.Name, dst.MachineType, dst.Name, src.MachineType)
	case src.CPUModel != "" && dst.CPUModel != "" && src.CPUModel != dst.CPUModel:
		return fmt.Sprintf("guest CPU models differ (%s on %s, %s on %s): live migration needs one baseline; start every agent with the same --cpu-model (e.g. Haswell-noTSX)",
			src.CPUModel, src.Name, dst.CPUModel, dst.Name)
	}
	return ""
}

// versionLess compares dotted versions numerically where they are numbers
// ("7.2.1" < "7.10"), textually otherwise; a leading name ("sim-1",
// "QEMU 7.2") is compared as text first.
func versionLess(a, b string) bool {
	pa, va := splitVersion(a)
	pb, vb := splitVersion(b)
	if pa != pb {
		return pa < pb
	}
	for i := 0; i < max(len(va), len(vb)); i++ {
		x, y := "0", "0" // a missing part counts as 0: 7.2 == 7.2.0
		if i < len(va) {
			x = va[i]
		}
		if i < len(vb) {
			y = vb[i]
		}
		nx, ex := strconv.Atoi(x)
		ny, ey := strconv.Atoi(y)
		switch {
		case ex == nil && ey == nil && nx != ny:
			return nx < ny
		case (ex != nil || ey != nil) && x != y:
			return x < y
		}
	}
	return false
}

func splitVersion(v string) (prefix string, parts []string) {
	i := strings.IndexAny(v, "0123456789")
	if i < 0 {
		return v, nil
	}
	return v[:i], strings.Split(v[i:], ".")
}

// CheckMigration runs the pre-checks of moving vm off its host, to host
// to (or, when to is "", to the host the placer picks among the others)
// over s, the stored hosts and allocations, and alive, the hosts whose
// agents are alive (nil: do not check). It refuses with an error wrapping
// state.ErrRefused that says why; it changes nothing.
//
// The target is checked with every placement filter as the scheduler
// would (capacity × ratio, reservations, required labels, pinning,
// isolation, affinity, storage): the snapshot keeps every host, with all
// but the candidates cordoned, so group and domain counts stay whole.
func CheckMigration(s *Snapshot, alive map[string]bool, vm *model.VM, to string, placer Placer) (MigrationCheck, error) {
	mode, err := migrationMode(vm)
	if err != nil {
		return MigrationCheck{}, err
	}
	source := vm.Status.Host
	var src *model.Host
	for i := range s.Hosts {
		if s.Hosts[i].Name == source {
			src = &s.Hosts[i]
		}
	}
	if to == source {
		return MigrationCheck{}, refused("VM %s is already on %s", vm.Name, to)
	}
	// A VM pinned to a host (spec.placement.host, vm create --host) moves
	// only where an operator names: the explicit target overrides the pin,
	// and the switch-over moves the pin to it (state.SwitchOver). Neither
	// the scheduler nor a drain picks a new host for it.
	if pin := vm.Spec.Placement.Host; pin != "" {
		if to == "" {
			return MigrationCheck{}, refused("VM %s is pinned to host %s (spec.placement.host, set by vm create --host): "+
				"name its new host with 'vpool vm migrate %s --to HOST', and the pin moves with it", vm.Name, pin, vm.Name)
		}
		c := *vm
		c.Spec.Placement.Host = to
		vm = &c
	}
	cs := *s
	cs.Epoch, cs.Changed = 0, nil
	cs.Hosts = make([]model.Host, len(s.Hosts))
	var why []string
	found := false
	for i, h := range s.Hosts {
		cs.Hosts[i] = h
		c := &cs.Hosts[i]
		reason := ""
		switch {
		case h.Name == source:
			reason = "-"
		case to != "" && h.Name != to:
			reason = "-"
		case h.State != model.HostReady || h.Cordoned:
			state := string(h.State)
			if h.Cordoned {
				state += ", cordoned"
			}
			reason = fmt.Sprintf("host %s is not ready (%s)", h.Name, state)
		case alive != nil && !alive[h.Name]:
			reason = fmt.Sprintf("host %s has no live agent (no heartbeat)", h.Name)
		default:
			reason = compatible(src, &h, vm, mode)
		}
		if h.Name == to {
			found = true
		}
		if reason != "" {
			c.Cordoned = true
			if reason != "-" {
				why = append(why, reason)
			}
		}
	}
	if to != "" && !found {
		return MigrationCheck{}, refused("host %q not found", to)
	}
	if to != "" && len(why) > 0 {
		return MigrationCheck{}, refused("cannot move VM %s to %s: %s", vm.Name, to, why[0])
	}
	host, expl := placer.Place(&cs, vm)
	if host == "" || host == source || (to != "" && host != to) {
		msg := "no other host fits"
		if to != "" {
			msg = to + " does not fit"
		}
		if detail := targetRejections(expl); detail != "" {
			msg += ": " + detail
		}
		if len(why) > 0 {
			msg += "; " + strings.Join(why, "; ")
		}
		return MigrationCheck{}, refused("cannot move VM %s: %s", vm.Name, msg)
	}
	if why := gateVerdict(s, vm, host); why != "" {
		return MigrationCheck{}, refused("cannot move VM %s to %s: %s", vm.Name, host, why)
	}
	return MigrationCheck{Target: host, Mode: mode, Explanation: expl}, nil
}

// gateVerdict runs on s the check the gate will run when the migration
// takes its hold (scheduler.CheckMove: every filter, the VM lifted off
// its source, every other host as it is), so that the pre-check never
// accepts what the gate refuses: e.g. one member of a hard-affinity
// group leaving the others on a ready host, which the placer, with the
// source cordoned, would allow.
func gateVerdict(s *Snapshot, vm *model.VM, target string) string {
	view, sched, err := schedulerView(s)
	if err != nil {
		return err.Error()
	}
	why := sched.CheckMove(view, scheduler.Request{Key: vm.Key(), Spec: &vm.Spec}, vm.Status.Host, target)
	_, why, _ = strings.Cut(why, ": ") // drop the filter's name
	return why
}

// targetRejections lists why candidate hosts were rejected, leaving out
// the hosts cordoned only to keep them out of the choice.
func targetRejections(expl *model.Explanation) string {
	if expl == nil {
		return ""
	}
	var parts []string
	for _, f := range expl.Filters {
		if f.Filter == "hoststate" || f.Filter == "host-state" {
			continue
		}
		parts = append(parts, f.Reason)
	}
	if len(parts) == 0 && !strings.Contains(expl.Summary, "cordoned") {
		return expl.Summary
	}
	return strings.Join(parts, "; ")
}
