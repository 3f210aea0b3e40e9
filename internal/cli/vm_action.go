package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

// waitTarget is what --wait waits for.
type waitTarget struct {
	desc string // "running", "stopped", "gone", "restarted"
	done func(*model.VM) bool
	// ignoreFailed ignores a failed phase until another phase was seen:
	// a failed VM being started is failed until the agent acts.
	ignoreFailed bool
}

var (
	runningTarget = waitTarget{desc: "running", done: client.InPhase(model.PhaseRunning)}
	stoppedTarget = waitTarget{desc: "stopped", done: client.InPhase(model.PhaseStopped)}
	goneTarget    = waitTarget{desc: "deleted", done: client.Gone, ignoreFailed: true}
)

// vmAction is one of start, stop, restart, delete: it calls the API and
// says what --wait waits for afterwards.
type vmAction struct {
	verb, requested, done string
	call                  func(c *client.Client, ctx context.Context, project, name string) (*model.VM, error)
	target                func(model.VM) waitTarget
}

var (
	startAction = vmAction{verb: "start", requested: "start requested", done: "running",
		call: (*client.Client).StartVM,
		target: func(model.VM) waitTarget {
			t := runningTarget
			t.ignoreFailed = true
			return t
		}}
	stopAction = vmAction{verb: "stop", requested: "stop requested", done: "stopped",
		call:   (*client.Client).StopVM,
		target: func(model.VM) waitTarget { return stoppedTarget }}
	restartAction = vmAction{verb: "restart", requested: "restart requested", done: "restarted",
		call: (*client.Client).RestartVM,
		target: func(vm model.VM) waitTarget {
			nonce := vm.Spec.RestartNonce
			return waitTarget{desc: "restarted", ignoreFailed: true, done: func(v *model.VM) bool {
				return v != nil && v.Status.Phase == model.PhaseRunning && v.Status.AppliedRestartNonce >= nonce
			}}
		}}
	deleteAction = vmAction{verb: "delete", requested: "deletion requested", done: "deleted",
		call: func(c *client.Client, ctx context.Context, project, name string) (*model.VM, error) {
			return nil, c.DeleteVM(ctx, project, name)
		},
		target: func(model.VM) waitTarget { return goneTarget }}
)

func (a *app) vmActionCmd(verb, short string, act vmAction) *cobra.Command {
	var w waitOpts
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   verb + " NAME...",
		Short: short,
		Args:  minArgs(1, "at least one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runVMAction(cmd, act, args, w.enabled(), timeout)
		},
	}
	if verb == "delete" {
		cmd.Aliases = []string{"rm"}
	}
	w.flags(cmd, "every VM is "+act.done)
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long to wait")
	return cmd
}

// vmStopCmd is `vm stop`: graceful by default (the guest gets --timeout
// to power off, then the plug is pulled), or --force at once, as `qm
// stop` and `incus stop --force` do.
func (a *app) vmStopCmd() *cobra.Command {
	var w waitOpts
	var force bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop NAME...",
		Short: "Stop VMs: ask the guest to power off (--timeout), or pull the plug (--force)",
		Long: `Stop VMs. The guest is asked to power off (ACPI power button) and gets
--timeout to do so (default: its host's, 30s); then the plug is pulled.
--force pulls it at once, also while a graceful stop is under way (a hung
guest). Waits until every VM is stopped unless --no-wait.`,
		Example: `  vpool vm stop web1
  vpool vm stop web1 --timeout 2m
  vpool vm stop web1 --force`,
		Args: minArgs(1, "at least one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if force && cmd.Flags().Changed("timeout") {
				return usagef("give --force or --timeout, not both: a forced stop waits for nothing")
			}
			req := api.VMStopRequest{Force: force}
			if cmd.Flags().Changed("timeout") {
				secs := int((timeout + time.Second - 1) / time.Second)
				if secs < 1 || secs > model.MaxStopTimeout {
					return usagef("--timeout: %s is not between 1s and %ds", timeout, model.MaxStopTimeout)
				}
				req.TimeoutSeconds = secs
			}
			act := stopAction
			act.call = func(c *client.Client, ctx context.Context, project, name string) (*model.VM, error) {
				return c.StopVMWith(ctx, project, name, req)
			}
			return a.runVMAction(cmd, act, args, w.enabled(), defaultTimeout+timeout)
		},
	}
	w.flags(cmd, "every VM is stopped")
	cmd.Flags().BoolVar(&force, "force", false, "pull the plug at once instead of asking the guest to power off")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "how long the guest gets to power off before the plug is pulled (default: its host's, 30s)")
	return cmd
}

// runVMAction applies act to each VM, then waits for each when asked.
// A VM that fails does not stop the others; each failure is printed and
// the command fails at the end.
func (a *app) runVMAction(cmd *cobra.Command, act vmAction, names []string, wait bool, timeout time.Duration) error {
	format, err := a.format()
	if err != nil {
		return err
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx, project := cmd.Context(), a.cfg.Project
	var failed []error
	fail := func(name string, err error) {
		if len(names) > 1 {
			if !strings.HasPrefix(err.Error(), "vm "+name+":") && !strings.HasPrefix(err.Error(), "vm "+name+" failed") {
				err = fmt.Errorf("vm %s: %w", name, err)
			}
			fmt.Fprintln(errw(cmd), "error: "+describe(err))
		}
		failed = append(failed, err)
	}
	var results []model.VM
	for _, name := range names {
		vm, err := act.call(c, ctx, project, name)
		if err != nil {
			fail(name, err)
			continue
		}
		if vm == nil && act.verb == "restart" && wait {
			// The nonce to wait for is in the spec.
			if vm, err = c.GetVM(ctx, project, name); err != nil {
				fail(name, err)
				continue
			}
		}
		if vm == nil {
			vm = &model.VM{Meta: model.Meta{Name: name, Project: project}}
		}
		results = append(results, *vm)
		if !wait && format == formatTable || act.verb == "delete" && !wait {
			fmt.Fprintf(outw(cmd), "vm %s: %s\n", name, act.requested)
		}
	}
	if wait {
		results = a.waitResults(cmd, c, act, results, timeout, fail)
	}
	if format != formatTable && act.verb != "delete" && len(results) > 0 {
		if err := a.print(cmd, results, nil); err != nil {
			return err
		}
	}
	return joinFailures(failed, len(names), "VM")
}

// waitResults waits for each VM of an action and prints how it ended.
func (a *app) waitResults(cmd *cobra.Command, c *client.Client, act vmAction, results []model.VM, timeout time.Duration, fail func(string, error)) []model.VM {
	format, _ := a.format()
	waited := make([]model.VM, 0, len(results))
	deadline, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	for _, vm := range results {
		got, err := a.waitOne(cmd, deadline, c, vm, act.target(vm), timeout)
		if err != nil {
			fail(vm.Name, err)
			continue
		}
		if got != nil {
			waited = append(waited, *got)
		}
		if format == formatTable || act.verb == "delete" {
			fmt.Fprintf(outw(cmd), "vm %s: %s\n", vm.Name, doneText(act, got))
		}
	}
	return waited
}

func doneText(act vmAction, vm *model.VM) string {
	if vm != nil && vm.Status.Host != "" {
		return act.done + " on " + vm.Status.Host
	}
	return act.done
}

// joinFailures returns the one failure of a one-object command as is, and
// a summary (the details were printed) when several objects were named.
func joinFailures(failed []error, n int, what string) error {
	switch {
	case len(failed) == 0:
		return nil
	case n == 1:
		return failed[0]
	}
	return fmt.Errorf("%d of %d %ss failed", len(failed), n, what)
}

// waitAll waits for each VM in turn until it reaches its target; the
// timeout bounds the whole wait.
func (a *app) waitAll(cmd *cobra.Command, c *client.Client, vms []model.VM, target func(model.VM) waitTarget, timeout time.Duration) ([]model.VM, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	out := make([]model.VM, 0, len(vms))
	for _, vm := range vms {
		got, err := a.waitOne(cmd, ctx, c, vm, target(vm), timeout)
		if err != nil {
			return nil, err
		}
		if got != nil {
			out = append(out, *got)
		}
	}
	return out, nil
}

// waitOne polls one VM until it reaches the target or fails, printing a
// line on stderr at every change of phase, host or message.
func (a *app) waitOne(cmd *cobra.Command, ctx context.Context, c *client.Client, vm model.VM, t waitTarget, timeout time.Duration) (*model.VM, error) {
	sawOther, hinted := false, false
	start := a.env.now()
	cond := func(v *model.VM) bool {
		if t.done(v) || unschedulable(v) {
			return true
		}
		if v != nil && v.Status.Phase == model.PhaseStopping && !v.Spec.StopForce && !hinted && a.env.now().Sub(start) >= stopHintAfter {
			hinted = true
			fmt.Fprintf(errw(cmd), "%s: the guest has not powered off yet; 'vpool vm stop %s --force' pulls the plug\n", v.Name, v.Name)
		}
		if v == nil || v.Status.Phase != model.PhaseFailed {
			sawOther = true
			return false
		}
		return sawOther || !t.ignoreFailed
	}
	progress := func(v *model.VM) {
		line := progressLine(v)
		if d := a.env.now().Sub(start); d >= time.Second {
			line += fmt.Sprintf(" (%ds)", int(d/time.Second))
		}
		fmt.Fprintln(errw(cmd), line)
	}
	project := vm.Project
	if project == "" {
		project = a.cfg.Project
	}
	got, err := c.WaitVM(ctx, project, vm.Name, cond, progress)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && cmd.Context().Err() == nil:
		phase := "pending"
		if got != nil {
			phase = string(got.Status.Phase)
		}
		return got, fmt.Errorf("vm %s: still %s after %s, not %s (wait longer with --timeout)", vm.Name, phase, timeout, t.desc)
	case err != nil:
		return got, err
	case unschedulable(got) && !t.done(got):
		return got, fmt.Errorf("vm %s fits no host yet: %s; it stays pending and is placed when capacity frees up ('vpool vm show %s' explains, 'vpool vm delete %s' gives up)",
			vm.Name, got.Status.Explanation.Summary, vm.Name, vm.Name)
	case got != nil && got.Status.Phase == model.PhaseFailed && !t.done(got):
		msg := got.Status.LastError
		if msg == "" {
			msg = got.Status.Message
		}
		return got, fmt.Errorf("vm %s failed: %s", vm.Name, orDash(msg))
	}
	return got, nil
}

// progressLine renders a VM's state for --wait: "web1: creating on h1: pulling image".
func progressLine(v *model.VM) string {
	s := v.Name + ": " + orDash(string(v.Status.Phase))
	if v.Status.Host != "" {
		s += " on " + v.Status.Host
	}
	if v.Status.Message != "" {
		s += ": " + v.Status.Message
	}
	if v.Status.LastError != "" {
		s += " (error: " + v.Status.LastError + ")"
	}
	return s
}

// stopHintAfter is how long a graceful stop may take before the wait
// says how to force it.
const stopHintAfter = 5 * time.Second

// unschedulable says the scheduler found no host for the VM: waiting for
// it to run would wait for capacity that may never come.
func unschedulable(v *model.VM) bool {
	return v != nil && v.Status.Phase == model.PhasePending && v.Status.Host == "" &&
		v.Status.Explanation != nil && v.Status.Explanation.Chosen == ""
}
