package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// vmState is the agent's bookkeeping of one VM, by key project/name.
type vmState struct {
	busy bool
	// doneSeq is the Agent.doneSeq at which its last worker finished.
	doneSeq int64
	// applied is the RestartNonce last acted on; known once initialised
	// from the server's status or a fresh create.
	applied      int64
	appliedKnown bool
	// pendingResize: a live resize needed a restart; applied at the next
	// stop/start.
	pendingResize bool
	// failures and retryAt back off a VM whose converge keeps failing at
	// the same spec revision.
	failures int
	failRev  int64
	retryAt  time.Time
	// crashes counts restarts after a crash (the guest or QEMU died while
	// the spec wanted it running); crashAt is when the last was made. A
	// VM that stays up for crashReset is forgiven. VM-level HA: a crash
	// loop is restarted with a growing delay, not at full speed.
	crashes int
	crashAt time.Time
	// last is the last report the server accepted.
	last    *api.VMReport
	lastRev int64 // the VM's revision after the server applied last
	sentAt  time.Time
	usage   model.VMUsage
	orphan  bool
	// stopCancel ends a graceful stop in progress: a forced stop asked
	// for meanwhile must not wait for the guest.
	stopCancel context.CancelFunc
}

func (a *Agent) vmState(key string) *vmState {
	st := a.vms[key]
	if st == nil {
		st = &vmState{}
		a.vms[key] = st
	}
	return st
}

// convergeLoop runs a converge pass on every assignment change, after
// every finished VM worker that saw a newer spec, and every StatusInterval.
func (a *Agent) convergeLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.StatusInterval)
	defer t.Stop()
	sem := make(chan struct{}, a.cfg.Parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-t.C:
		}
		a.pass(ctx, sem, &wg)
	}
}

// pass starts a worker for every assigned VM and every orphan that is not
// already being worked on.
func (a *Agent) pass(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup) {
	// A worker that finishes after this point changed what List shows
	// about its VM: such VMs wait for the next pass.
	a.mu.Lock()
	listSeq := a.doneSeq
	a.mu.Unlock()
	infos, err := a.cfg.Driver.List(ctx)
	if err != nil {
		a.log.Error("list driver VMs", "err", err)
		return
	}
	have := make(map[string]hypervisor.Info, len(infos))
	for _, in := range infos {
		have[in.ID] = in
	}
	now := time.Now()
	a.mu.Lock()
	if !a.haveList || a.fn.fenced {
		// Fenced: nothing starts until a renewal succeeds (fence.go).
		a.mu.Unlock()
		return
	}
	type job struct {
		vm *model.VM
		in *hypervisor.Info
	}
	var jobs []job
	var orphans []hypervisor.Info
	again := false
	stale := func(st *vmState) bool {
		if st.doneSeq > listSeq {
			again = true
			return true
		}
		return false
	}
	for key, vm := range a.assigned {
		st := a.vmState(key)
		if st.busy || stale(st) || (st.failRev == vm.Revision && now.Before(st.retryAt)) {
			continue
		}
		if vm.Status.Migration != "" {
			// A migration owns the VM now: the migrations loop acts.
			continue
		}
		st.busy = true
		var inp *hypervisor.Info
		if in, ok := have[vmID(vm.Project, vm.Name)]; ok {
			inp = &in
		}
		jobs = append(jobs, job{vm, inp})
	}
	for _, in := range infos {
		key := infoKey(in)
		if _, ok := a.assigned[key]; ok {
			continue
		}
		st := a.vmState(key)
		if st.busy || stale(st) || now.Before(st.retryAt) {
			continue
		}
		st.busy = true
		orphans = append(orphans, in)
	}
	// Forget bookkeeping of VMs that are neither assigned nor present.
	for key, st := range a.vms {
		if _, ok := a.assigned[key]; ok || st.busy {
			continue
		}
		if p, n, ok := splitKey(key); ok {
			if _, ok := have[vmID(p, n)]; ok {
				continue
			}
		}
		delete(a.vms, key)
	}
	a.mu.Unlock()
	if again {
		a.wake()
	}

	for _, j := range jobs {
		a.spawn(ctx, sem, wg, j.vm.Key(), func() { a.convergeOne(ctx, j.vm, j.in) })
	}
	for _, in := range orphans {
		a.spawn(ctx, sem, wg, infoKey(in), func() { a.checkOrphan(ctx, in) })
	}
}

func (a *Agent) spawn(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup, key string, fn func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			a.done(key, 0)
			return
		}
		defer func() { <-sem }()
		fn()
	}()
}

// done clears the busy mark of key and wakes the loop when the assignment
// changed while the worker ran (rev is the revision it worked on).
func (a *Agent) done(key string, rev int64) {
	a.mu.Lock()
	a.doneSeq++
	if st := a.vms[key]; st != nil {
		st.busy = false
		st.doneSeq = a.doneSeq
	}
	vm, ok := a.assigned[key]
	changed := ok && vm.Revision != rev
	a.mu.Unlock()
	if changed {
		a.wake()
	}
}

func infoKey(in hypervisor.Info) string {
	p, n := in.Config.Project, in.Config.Name
	if p == "" || n == "" {
		p, n, _ = splitID(in.ID)
	}
	return p + "/" + n
}

func splitKey(key string) (project, name string, ok bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", "", false
}

// convergeOne makes the driver match one assigned VM and reports.
func (a *Agent) convergeOne(ctx context.Context, vm *model.VM, in *hypervisor.Info) {
	key := vm.Key()
	defer a.done(key, vm.Revision)
	rep, err := a.apply(ctx, vm, in)
	if ctx.Err() != nil || errors.Is(err, errStopOverridden) {
		return // the next pass acts on the newer spec
	}
	if errors.Is(err, errNotOwner) || errors.Is(err, errCrashBackoff) {
		// Not ours to start (the assignment is stale), or a crashed VM
		// waiting out its back-off: nothing to report; look again later.
		a.mu.Lock()
		a.vmState(key).retryAt = time.Now().Add(time.Second)
		a.mu.Unlock()
		a.log.Info("not starting VM", "vm", key, "reason", err)
		return
	}
	a.mu.Lock()
	st := a.vmState(key)
	if err != nil {
		if st.failRev != vm.Revision {
			st.failures = 0
		}
		st.failures++
		st.failRev = vm.Revision
		st.retryAt = time.Now().Add(retryDelay(st.failures))
	} else {
		st.failures, st.failRev = 0, 0
	}
	rep.Usage = st.usage
	rep.AppliedRestartNonce = st.applied
	a.mu.Unlock()
	if err != nil {
		a.log.Warn("converge failed", "vm", key, "err", err)
	}
	a.report(ctx, vm, rep)
}

func retryDelay(failures int) time.Duration {
	d := time.Second << min(failures-1, 6)
	return min(d, time.Minute)
}

// apply performs the driver calls for vm and returns the report to send.
func (a *Agent) apply(ctx context.Context, vm *model.VM, in *hypervisor.Info) (api.VMReport, error) {
	d := a.cfg.Driver
	id := vmID(vm.Project, vm.Name)
	rep := api.VMReport{Project: vm.Project, Name: vm.Name, UID: vm.UID}
	if vm.DeletedAt != nil {
		rep.Phase = model.PhaseDeleting
		if in != nil {
			if err := d.Delete(ctx, id); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
				rep.Error = err.Error()
				return rep, fmt.Errorf("delete: %w", err)
			}
			a.log.Info("deleted VM", "vm", vm.Key())
		}
		rep.Gone = true
		return rep, nil
	}
	if in != nil && in.State == hypervisor.StateUnknown {
		// The VM runs but the driver cannot reach it: say so, change
		// nothing, and leave the decision to the operator (or HA). The
		// driver keeps trying; the next pass sees what it finds.
		rep.Phase, rep.Error = model.PhaseUnknown, in.Reason
		if rep.Error == "" {
			rep.Error = "unreachable: the host cannot reach the VM"
		}
		return rep, nil
	}
	if in != nil && in.Config.UID != "" && vm.UID != "" && in.Config.UID != vm.UID {
		// A VM of the same name that the store no longer has: replace it.
		a.log.Warn("replacing a stale VM with the same name", "vm", vm.Key(), "oldUID", in.Config.UID, "uid", vm.UID)
		if err := d.Delete(ctx, id); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			return a.failed(rep, "delete stale copy", err)
		}
		in = nil
	}
	a.mu.Lock()
	st := a.vmState(vm.Key())
	created := in == nil
	if created || !st.appliedKnown {
		st.applied, st.appliedKnown = vm.Status.AppliedRestartNonce, true
	}
	if created {
		st.applied = vm.Spec.RestartNonce
	}
	a.mu.Unlock()
	if created && vm.Spec.Power == model.PowerRunning {
		if err := a.confirmOwner(ctx, vm); err != nil {
			return rep, err
		}
	}
	if created {
		cfg, err := a.vmConfig(ctx, vm)
		if err != nil {
			return a.failed(rep, "create", err)
		}
		if err := d.Create(ctx, cfg); err != nil && !errors.Is(err, hypervisor.ErrExists) {
			return a.failed(rep, "create", err)
		}
		a.log.Info("created VM", "vm", vm.Key())
		in = &hypervisor.Info{ID: id, State: hypervisor.StateStopped, VCPUs: cfg.Spec.VCPUs, Memory: cfg.Spec.Memory, Config: cfg}
	}
	state, msg, resize, err := a.applySpec(ctx, vm, in)
	rep.Message, rep.Resize = msg, resize
	if err == nil {
		rep.Disks, err = a.applyDisks(ctx, vm, in)
	}
	if err == nil {
		var nmsg string
		if nmsg, err = a.applyNICs(ctx, vm, in); nmsg != "" && rep.Message == "" {
			rep.Message = nmsg
		}
	}
	if err != nil {
		rep.Phase = phaseOf(state)
		rep.Error = err.Error()
		return rep, err
	}
	state, err = a.applyPower(ctx, vm, state)
	if op := pendingResize(vm); op != nil && err == nil && rep.Resize == nil {
		a.mu.Lock()
		if !a.vmState(vm.Key()).pendingResize {
			rep.Resize = &api.ResizeResult{ID: op.ID}
		}
		a.mu.Unlock()
	}
	if err == nil {
		a.applySnapshots(ctx, vm)
	}
	rep.Phase = phaseOf(state)
	if err != nil {
		rep.Error = err.Error()
		if state != hypervisor.StateRunning && vm.Spec.Power == model.PowerRunning {
			rep.Phase = model.PhaseFailed
			if created {
				// Undo the create: a VM that never ran here leaves
				// nothing behind, so that it can be placed elsewhere.
				if derr := a.cfg.Driver.Delete(ctx, id); derr != nil && !errors.Is(derr, hypervisor.ErrNotFound) {
					a.log.Warn("removing a VM that failed to start", "vm", vm.Key(), "err", derr)
				}
			}
		}
		return rep, err
	}
	if state == hypervisor.StateCrashed {
		rep.Error = "guest crashed"
	}
	rep.Watchdog = in.Watchdog
	return rep, nil
}

func (a *Agent) failed(rep api.VMReport, op string, err error) (api.VMReport, error) {
	rep.Phase = model.PhaseFailed
	rep.Error = fmt.Sprintf("%s: %v", op, err)
	return rep, fmt.Errorf("%s: %w", op, err)
}

// applySpec resizes and sets controls; it returns the current state, a
// message for changes that wait for a restart, and the answer to a
// pending resize request that the driver refused. A resize that needs a
// restart is refused unless the request asked for one (then it is made
// while the VM is down, in applyPower).
func (a *Agent) applySpec(ctx context.Context, vm *model.VM, in *hypervisor.Info) (hypervisor.State, string, *api.ResizeResult, error) {
	d := a.cfg.Driver
	id := in.ID
	msg := ""
	var res *api.ResizeResult
	if in.VCPUs != vm.Spec.VCPUs || in.Memory != vm.Spec.Memory {
		op := pendingResize(vm)
		a.mu.Lock()
		restart := vm.Spec.RestartNonce != a.vmState(vm.Key()).applied
		a.mu.Unlock()
		live := in.State == hypervisor.StateRunning || in.State == hypervisor.StatePaused
		var err error
		if restart && live && vm.Spec.Power == model.PowerRunning {
			err = fmt.Errorf("a restart was asked for: %w", hypervisor.ErrNeedsRestart)
		} else {
			err = d.Resize(ctx, id, vm.Spec.VCPUs, vm.Spec.Memory)
		}
		a.mu.Lock()
		st := a.vmState(vm.Key())
		switch {
		case err == nil:
			st.pendingResize = false
		case op != nil && !restart:
			res, err = refuseResize(op, err), nil
		case errors.Is(err, hypervisor.ErrNeedsRestart):
			st.pendingResize = true
			msg = fmt.Sprintf("resize to %d vCPUs / %s takes effect at the next restart", vm.Spec.VCPUs, vm.Spec.Memory)
			err = nil
		}
		a.mu.Unlock()
		if err != nil {
			return in.State, "", nil, fmt.Errorf("resize: %w", err)
		}
	}
	if in.Config.Spec.Controls != vm.Spec.Controls {
		if err := d.SetControls(ctx, id, vm.Spec.Controls); err != nil {
			return in.State, msg, res, fmt.Errorf("set controls: %w", err)
		}
	}
	return in.State, msg, res, nil
}

// applyPower starts, stops or restarts the VM to match Spec.Power and
// Spec.RestartNonce; it returns the resulting state.
func (a *Agent) applyPower(ctx context.Context, vm *model.VM, state hypervisor.State) (hypervisor.State, error) {
	d := a.cfg.Driver
	id := vmID(vm.Project, vm.Name)
	key := vm.Key()
	a.mu.Lock()
	st := a.vmState(key)
	restart := vm.Spec.RestartNonce != st.applied
	pending := st.pendingResize
	a.mu.Unlock()
	live := state == hypervisor.StateRunning || state == hypervisor.StatePaused
	if vm.Spec.Power == model.PowerStopped {
		if live {
			if err := a.stopVM(ctx, vm, id); err != nil {
				return state, fmt.Errorf("stop: %w", err)
			}
		}
		if pending {
			if err := a.resizeOffline(ctx, vm); err != nil {
				return hypervisor.StateStopped, err
			}
		}
		return hypervisor.StateStopped, nil
	}
	if live && !restart {
		return state, nil
	}
	if live {
		if err := d.Stop(ctx, id, a.cfg.StopTimeout); err != nil {
			return state, fmt.Errorf("restart: stop: %w", err)
		}
	}
	if state == hypervisor.StateCrashed {
		if err := a.crashBackoff(key); err != nil {
			return state, err
		}
		a.log.Warn("restarting crashed VM", "vm", key)
	}
	if !live {
		if err := a.confirmOwner(ctx, vm); err != nil {
			return state, err
		}
	}
	if pending {
		if err := a.resizeOffline(ctx, vm); err != nil {
			return hypervisor.StateStopped, err
		}
	}
	if err := d.Start(ctx, id); err != nil {
		return hypervisor.StateStopped, fmt.Errorf("start: %w", err)
	}
	a.kickNet() // its taps exist now
	a.mu.Lock()
	st.applied = vm.Spec.RestartNonce
	a.mu.Unlock()
	if live {
		a.log.Info("restarted VM", "vm", key)
	} else {
		a.log.Info("started VM", "vm", key)
	}
	return hypervisor.StateRunning, nil
}

// errCrashBackoff says a crashed VM waits before its next restart.
var errCrashBackoff = errors.New("agent: crashed VM waits before it restarts")

// crashReset is how long a VM restarted after a crash must stay up for
// its crash count to be forgotten.
const crashReset = 10 * time.Minute

// crashBackoff allows a restart after a crash at most every
// 1 s, 2 s, 4 s ... 1 min (the crash count grows with each restart).
func (a *Agent) crashBackoff(key string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.vmState(key)
	now := time.Now()
	if st.crashes > 0 && now.Sub(st.crashAt) > crashReset {
		st.crashes = 0
	}
	if st.crashes > 0 {
		if wait := retryDelay(st.crashes) - now.Sub(st.crashAt); wait > 0 {
			return fmt.Errorf("%w: %d restarts after crashes, next in %s", errCrashBackoff, st.crashes, wait.Round(time.Millisecond))
		}
	}
	st.crashes++
	st.crashAt = now
	return nil
}

// errStopOverridden ends a graceful stop that a forced stop replaced.
var errStopOverridden = errors.New("agent: graceful stop overridden by a forced stop")

// stopVM stops a live VM as its spec says: the plug pulled at once
// (StopForce), or the guest asked to power off within StopTimeout (else
// the agent's default) before it is.
func (a *Agent) stopVM(ctx context.Context, vm *model.VM, id string) error {
	if vm.Spec.StopForce {
		if err := a.cfg.Driver.Kill(ctx, id); err != nil {
			return err
		}
		a.log.Info("stopped VM (forced)", "vm", vm.Key())
		return nil
	}
	timeout := a.cfg.StopTimeout
	if vm.Spec.StopTimeout > 0 {
		timeout = time.Duration(vm.Spec.StopTimeout) * time.Second
	}
	sctx, cancel := context.WithCancelCause(ctx)
	a.mu.Lock()
	a.vmState(vm.Key()).stopCancel = func() { cancel(errStopOverridden) }
	a.mu.Unlock()
	err := a.cfg.Driver.Stop(sctx, id, timeout)
	a.mu.Lock()
	a.vmState(vm.Key()).stopCancel = nil
	a.mu.Unlock()
	cancel(nil)
	if errors.Is(context.Cause(sctx), errStopOverridden) {
		return errStopOverridden
	}
	if err != nil {
		return err
	}
	a.log.Info("stopped VM", "vm", vm.Key())
	return nil
}

func (a *Agent) resizeOffline(ctx context.Context, vm *model.VM) error {
	if err := a.cfg.Driver.Resize(ctx, vmID(vm.Project, vm.Name), vm.Spec.VCPUs, vm.Spec.Memory); err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	a.mu.Lock()
	a.vmState(vm.Key()).pendingResize = false
	a.mu.Unlock()
	return nil
}

func (a *Agent) vmConfig(ctx context.Context, vm *model.VM) (hypervisor.VMConfig, error) {
	if ci := vm.Spec.CloudInit; ci != nil && ci.UserDataSealed != nil {
		// the server opens a VM's user data for its host; a sealed copy
		// here means it could not (its log says why): a seed without it
		// would boot a guest without its users, keys or set-up
		return hypervisor.VMConfig{}, errSealedUserData
	}
	cfg := hypervisor.VMConfig{
		ID:      vmID(vm.Project, vm.Name),
		Name:    vm.Name,
		Project: vm.Project,
		UID:     vm.UID,
		Spec:    vm.Spec,
	}
	if o := vm.Status.Owner; o != nil && o.Host == a.cfg.HostName {
		cfg.AdoptEpoch = o.Epoch // an HA restart: adopt the disks on shared pools
	}
	ports, err := a.nicPorts(vm)
	if err != nil {
		return cfg, err
	}
	cfg.Ports = ports
	if vm.Spec.Image != "" {
		im, err := a.resolveImage(ctx, vm.Spec.Image)
		if err != nil {
			return cfg, fmt.Errorf("image %s: %w", vm.Spec.Image, err)
		}
		cfg.Image = im
	}
	return cfg, nil
}

// errSealedUserData: a VM's user data reached this host sealed.
var errSealedUserData = errors.New("agent: spec.cloudInit.userData reached this host sealed: the server could not open it (its log says why), and the VM is not created without it")

func phaseOf(s hypervisor.State) model.Phase {
	switch s {
	case hypervisor.StateRunning:
		return model.PhaseRunning
	case hypervisor.StatePaused:
		return model.PhasePaused
	case hypervisor.StateCrashed:
		return model.PhaseFailed
	case hypervisor.StateUnknown:
		return model.PhaseUnknown
	default:
		return model.PhaseStopped
	}
}

// report sends rep unless the server already holds it.
func (a *Agent) report(ctx context.Context, vm *model.VM, rep api.VMReport) {
	key := vm.Key()
	a.mu.Lock()
	st := a.vmState(key)
	same := st.last != nil && sameReport(*st.last, rep)
	stored := vm.Status.Phase == rep.Phase && vm.Status.LastError == rep.Error &&
		vm.Status.AppliedRestartNonce == rep.AppliedRestartNonce && vm.Status.Message == rep.Message &&
		(rep.Disks == nil || sameDisks(vm.Status.Disks, rep.Disks)) && !newerFiring(rep.Watchdog, vm.Status.Watchdog)
	// Nothing to say when the server already holds this status. Resend an
	// accepted report whose effect the server has since overwritten at
	// most once per interval, so that a server keeping its own view
	// cannot make us spin.
	skip := rep.Resize == nil && (stored || (same && time.Since(st.sentAt) < a.cfg.StatusInterval))
	a.mu.Unlock()
	if skip && !rep.Gone {
		return
	}
	var after model.VM
	err := a.putStatus(ctx, rep, &after)
	switch st := httpStatus(err); {
	case err == nil:
	case st == http.StatusNotFound && rep.Gone:
		err = nil // deletion already finished
	case ctx.Err() != nil:
		return
	default:
		a.log.Warn("status report failed", "vm", key, "phase", rep.Phase, "err", err)
		return
	}
	a.mu.Lock()
	if rep.Gone {
		delete(a.vms, key)
	} else {
		r := rep
		st := a.vmState(key)
		st.last, st.sentAt, st.lastRev = &r, time.Now(), after.Revision
		// The answer is the VM as stored: hold it, as a delta poll is not
		// woken by our own report (api.Assignments).
		if cur := a.assigned[key]; cur != nil && after.UID == cur.UID && after.Revision > cur.Revision {
			if after.Project == "" {
				after.Project = api.DefaultProject
			}
			a.assigned[key] = &after
		}
	}
	a.mu.Unlock()
}

func sameReport(x, y api.VMReport) bool {
	return x.Phase == y.Phase && x.Error == y.Error && x.Message == y.Message &&
		x.AppliedRestartNonce == y.AppliedRestartNonce && x.Gone == y.Gone && x.UID == y.UID && sameDisks(x.Disks, y.Disks) &&
		!newerFiring(x.Watchdog, y.Watchdog) && !newerFiring(y.Watchdog, x.Watchdog)
}

// newerFiring reports whether the watchdog firing w is one that held
// (the server's, or an earlier report's) does not know yet.
func newerFiring(w, held *model.WatchdogFiring) bool {
	return w != nil && (held == nil || w.At.After(held.At) || w.Count != held.Count && w.At.Equal(held.At))
}

func sameDisks(x, y []model.DiskStatus) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func (a *Agent) putStatus(ctx context.Context, rep api.VMReport, out *model.VM) error {
	path := fmt.Sprintf("%s/vms/%s/%s/status", api.AgentPrefix, url.PathEscape(rep.Project), url.PathEscape(rep.Name))
	if out == nil {
		// A nil *model.VM in do's any is not nil: the answer would be
		// decoded into it and fail ("Unmarshal(nil *model.VM)"), and an
		// accepted report would read as a failed one.
		return a.client.do(ctx, http.MethodPut, path, rep, nil)
	}
	return a.client.do(ctx, http.MethodPut, path, rep, out)
}

// checkOrphan handles a VM the driver has but no assignment names. It is
// conservative: the VM is deleted only when the server answers that it
// does not know it (404), or that it is another host's (409) while the
// copy here is one this agent's self-fence killed and is still stopped —
// HA restarted it elsewhere, and the dead copy would block every later
// migration of it to this host. Delete removes only what this host owns
// (on a shared pool, the disks belong to the host that runs the VM now).
// Otherwise the VM is left as it is and logged.
func (a *Agent) checkOrphan(ctx context.Context, in hypervisor.Info) {
	key := infoKey(in)
	defer a.done(key, 0)
	project, name, _ := splitKey(key)
	rep := api.VMReport{Project: project, Name: name, UID: in.Config.UID, Phase: phaseOf(in.State)}
	err := a.putStatus(ctx, rep, nil)
	if ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	st := a.vmState(key)
	first := !st.orphan
	st.orphan = true
	st.retryAt = time.Now().Add(a.cfg.StatusInterval)
	a.mu.Unlock()
	if httpStatus(err) == http.StatusConflict && !liveState(in.State) && a.fenceKilled(key, false) {
		a.dropFencedCopy(ctx, in, key)
		return
	}
	if httpStatus(err) != http.StatusNotFound {
		// Known to the server (or the server cannot say): assigned
		// elsewhere, or an assignment we have not seen yet. Leave it.
		if first {
			a.log.Warn("VM on this host is not assigned to it; leaving it alone", "vm", key, "state", in.State, "server", errString(err))
		}
		return
	}
	// Re-check that no assignment arrived meanwhile.
	a.mu.Lock()
	_, assigned := a.assigned[key]
	a.mu.Unlock()
	if assigned {
		return
	}
	a.log.Warn("deleting orphan VM the server does not know", "vm", key, "state", in.State)
	if err := a.cfg.Driver.Delete(ctx, in.ID); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		a.log.Error("delete orphan VM", "vm", key, "err", err)
	}
}

// liveState: a copy in this state may be running guest code.
func liveState(s hypervisor.State) bool {
	return s == hypervisor.StateRunning || s == hypervisor.StatePaused || s == hypervisor.StateUnknown
}

// dropFencedCopy deletes the stopped copy of a VM this agent's
// self-fence killed and the server now assigns to another host.
func (a *Agent) dropFencedCopy(ctx context.Context, in hypervisor.Info, key string) {
	a.mu.Lock()
	_, assigned := a.assigned[key]
	a.mu.Unlock()
	if assigned || a.isFenced() {
		return
	}
	a.log.Warn("dropping the stopped copy of a VM restarted on another host (this host's self-fence killed it)", "vm", key, "state", in.State)
	if err := a.cfg.Driver.Delete(ctx, in.ID); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		a.log.Error("drop fenced copy", "vm", key, "err", err)
		return
	}
	a.fenceKilled(key, true)
}

func errString(err error) string {
	if err == nil {
		return "accepted the report"
	}
	return err.Error()
}
