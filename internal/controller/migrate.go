package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// refusal is the gate's reason without the sentinel's words.
func refusal(err error) string {
	return strings.TrimPrefix(err.Error(), ErrPlanRefused.Error()+": ")
}

// Timing of the migration controller.
const (
	// migrationResync is how often the migration controller passes even
	// without a watch event (timeouts, drains waiting for room).
	migrationResync = time.Second
	// PrepareTimeout bounds how long a target may take to prepare.
	PrepareTimeout = 2 * time.Minute
	// TransferTimeout bounds a transfer; the source is then told to abort.
	TransferTimeout = 30 * time.Minute
)

// migrator is the migration controller of one leadership term: it drives
// every stored migration through its phases and carries out host drains.
// Every pass recomputes what to do from the store, so it resumes after a
// crash or a new leader at whatever phase was stored:
//
//	pending          → hold capacity on the target (CAS on its allocation)
//	                   → preparing-target (live and cold alike)
//	preparing-target → the target agent answers MigrateIn's address → transferring
//	transferring     → the source agent runs MigrateOut (a stopped VM's
//	                   driver copies its disks: cold) and reports; success
//	                   → switching-over; a failure it confirms → failed
//	switching-over   → one transaction: VM on the target, allocations moved → completed
//
// The VM carries the migration's id (Status.Migration) from creation to
// the end, and agents never create, start or stop a VM so marked: only
// the switch-over makes the target its owner, so one VM never runs twice.
type migrator struct {
	m    *Manager
	t    *term
	repo *state.Repo // the term's: every write is fenced
	gate *gate
	log  *slog.Logger
	now  func() time.Time
}

func newMigrator(m *Manager, t *term, g *gate) *migrator {
	return &migrator{m: m, t: t, repo: t.repo, gate: g, log: m.log.With("controller", "migration"), now: m.cfg.Clock}
}

// runMigrations runs the migration controller until ctx ends: a pass on
// every change of a migration, a host or a liveness key, and every
// migrationResync.
func (x *migrator) run(ctx context.Context) {
	m := x.m
	kick := make(chan struct{}, 1)
	for _, prefix := range []string{store.MigrationsPrefix, store.HostsPrefix, store.AlivePrefix} {
		go x.watch(ctx, prefix, kick)
	}
	tick := time.NewTicker(migrationResync)
	defer tick.Stop()
	for {
		if err := x.pass(ctx); err != nil && ctx.Err() == nil {
			m.cfg.ReconcileErrors("migration")
			x.log.Warn("migration pass failed", "err", err)
			x.t.check(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-tick.C:
		}
	}
}

// watch pokes kick on every change under prefix, re-watching when the
// watch breaks.
func (x *migrator) watch(ctx context.Context, prefix string, kick chan<- struct{}) {
	for ctx.Err() == nil {
		for resp := range x.repo.Store().Watch(ctx, prefix, 0) {
			if resp.Err != nil {
				break
			}
			select {
			case kick <- struct{}{}:
			default:
			}
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return
		}
	}
}

// pass drives every unfinished migration one step and then the drains.
func (x *migrator) pass(ctx context.Context) error {
	migs, _, err := x.repo.ListMigrations(ctx, "")
	if err != nil {
		return err
	}
	alive, err := x.repo.AliveHosts(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, mg := range migs {
		if mg.Phase.Final() {
			continue
		}
		if err := x.step(ctx, mg, alive); err != nil {
			errs = append(errs, fmt.Errorf("migration %s: %w", mg.Name, err))
		}
	}
	if err := x.drains(ctx, alive); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (x *migrator) fail(ctx context.Context, mg *model.Migration, phase model.MigrationPhase, reason, note string) error {
	_, err := x.repo.FinishMigration(ctx, mg.Name, phase, reason, note)
	if err == nil {
		x.log.Info("migration ended", "id", mg.Name, "vm", mg.VMKey(), "phase", phase, "reason", reason)
		x.gate.auditMoveEnd(ctx, mg, false, "migration "+mg.Name+" "+string(phase)+": "+reason)
	}
	return err
}

// advance moves mg to phase (if it is still where it was seen).
func (x *migrator) advance(ctx context.Context, mg *model.Migration, to model.MigrationPhase, fn func(*model.Migration)) error {
	from := mg.Phase
	_, err := x.repo.UpdateMigration(ctx, mg.Name, func(c *model.Migration) error {
		if c.Phase != from {
			return state.ErrSkip
		}
		c.Phase = to
		if fn != nil {
			fn(c)
		}
		return nil
	})
	return err
}

// step drives one unfinished migration.
func (x *migrator) step(ctx context.Context, mg *model.Migration, alive map[string]bool) error {
	vm, err := x.repo.GetVM(ctx, mg.Project, mg.VM)
	if errors.Is(err, state.ErrNotFound) || (err == nil && vm.DeletedAt != nil) {
		return x.stop(ctx, mg, model.MigrationCancelled, "the VM is being deleted")
	}
	if err != nil {
		return err
	}
	if vm.Status.Migration != mg.Name || vm.Status.Host != mg.Source {
		return x.fail(ctx, mg, model.MigrationFailed, fmt.Sprintf("the VM is no longer on %s under this migration", mg.Source), "")
	}
	srcUp, dstUp := alive[mg.Source], alive[mg.Target]
	switch mg.Phase {
	case model.MigrationPending, model.MigrationPreparingTarget:
		switch {
		case mg.CancelRequested:
			return x.fail(ctx, mg, model.MigrationCancelled, "cancelled", "")
		case !dstUp:
			return x.fail(ctx, mg, model.MigrationFailed, "target host "+mg.Target+" is down", "")
		case !srcUp:
			return x.fail(ctx, mg, model.MigrationFailed, "source host "+mg.Source+" is down", "")
		case mg.TargetError != "":
			return x.fail(ctx, mg, model.MigrationFailed, "target could not prepare: "+mg.TargetError, "")
		case x.now().Sub(mg.CreatedAt) > PrepareTimeout && mg.Phase == model.MigrationPreparingTarget:
			return x.fail(ctx, mg, model.MigrationFailed, fmt.Sprintf("target did not prepare within %s", PrepareTimeout), "")
		}
		if mg.Phase == model.MigrationPending {
			return x.start(ctx, mg)
		}
		if mg.TargetAddr != "" {
			now := x.now()
			return x.advance(ctx, mg, model.MigrationTransferring, func(c *model.Migration) { c.StartedAt = &now })
		}
		return nil
	case model.MigrationTransferring:
		return x.transferring(ctx, mg, srcUp, dstUp)
	case model.MigrationSwitchingOver:
		_, err := x.repo.SwitchOver(ctx, mg.Name, mg.Result)
		if errors.Is(err, state.ErrMoved) {
			return x.fail(ctx, mg, model.MigrationFailed, err.Error(), "")
		}
		if err == nil {
			x.log.Info("migration completed", "id", mg.Name, "vm", mg.VMKey(), "to", mg.Target)
			x.gate.auditMoveEnd(ctx, mg, true, fmt.Sprintf("migration %s (%s) completed", mg.Name, mg.Mode))
		}
		return err
	}
	return nil
}

// start holds capacity on the target through the gate, which re-checks
// the move with every placement rule on its latest view (the pre-checks
// ran on an older one), and moves on. A migration the controllers started
// holds its target already.
func (x *migrator) start(ctx context.Context, mg *model.Migration) error {
	if _, err := x.repo.GetHost(ctx, mg.Target); errors.Is(err, state.ErrNotFound) {
		return x.fail(ctx, mg, model.MigrationFailed, "target host "+mg.Target+" is gone", "")
	}
	_, err := x.gate.hold(ctx, mg)
	if errors.Is(err, ErrPlanRefused) {
		return x.fail(ctx, mg, model.MigrationFailed, "target "+mg.Target+" no longer suits the VM: "+refusal(err), "")
	}
	if err != nil {
		return err
	}
	// Cold moves take the same path: the source's driver copies a stopped
	// VM's local disks to the target (and hands over shared ones).
	return x.advance(ctx, mg, model.MigrationPreparingTarget, nil)
}

// transferring waits for the source's outcome; it asks the source to
// abort (cancel, target lost, timeout) and fails the migration only once
// the source confirms, so that a transfer that completed anyway is
// switched over rather than lost.
func (x *migrator) transferring(ctx context.Context, mg *model.Migration, srcUp, dstUp bool) error {
	switch {
	case mg.SourceDone || (mg.SourceGone && mg.Arrived) || (mg.SourceUnsure && mg.Arrived):
		return x.advance(ctx, mg, model.MigrationSwitchingOver, nil)
	case mg.SourceUnsure && !mg.TargetAbsent:
		if !dstUp {
			note := fmt.Sprintf("migration %s failed: the switchover went unanswered and target %s is down; the VM waits paused on %s for recovery", mg.Name, mg.Target, mg.Source)
			return x.fail(ctx, mg, model.MigrationFailed, "switchover unanswered and the target went down; the VM waits paused on "+mg.Source, note)
		}
		return nil // the target's report decides
	case mg.SourceUnsure:
		return x.fail(ctx, mg, model.MigrationFailed, "switchover unanswered ("+mg.SourceError+") and the target does not have the VM; it resumes on "+mg.Source, "")
	case mg.SourceGone && mg.TargetAbsent:
		// The source's host restarted without the VM (a host crash) and
		// the target never received it: nothing is in flight. End now
		// rather than at the transfer timeout; the source recreates the
		// VM from its assignment (shared disks) or HA restarts it.
		return x.endGone(ctx, mg, "the source restarted without the VM and the target does not have it")
	case mg.SourceError != "":
		if mg.CancelRequested {
			return x.fail(ctx, mg, model.MigrationCancelled, "cancelled during transfer; the VM stays on "+mg.Source, "")
		}
		reason := mg.SourceError
		if mg.Abort != "" {
			reason = mg.Abort + " (" + mg.SourceError + ")"
		}
		return x.fail(ctx, mg, model.MigrationFailed, reason+"; the VM stays on "+mg.Source, "")
	case !srcUp:
		if mg.Arrived {
			return x.advance(ctx, mg, model.MigrationSwitchingOver, nil)
		}
		note := fmt.Sprintf("migration %s failed: source host %s went down mid-transfer; the VM stays assigned to %s for recovery", mg.Name, mg.Source, mg.Source)
		return x.fail(ctx, mg, model.MigrationFailed, "source host "+mg.Source+" went down mid-transfer; the VM is left to recovery on "+mg.Source, note)
	case mg.SourceGone && !dstUp:
		note := fmt.Sprintf("migration %s failed: the VM left %s and target %s is down; recovery decides", mg.Name, mg.Source, mg.Target)
		return x.fail(ctx, mg, model.MigrationFailed, "the VM left the source and the target went down", note)
	}
	abort := ""
	switch {
	case mg.CancelRequested:
		abort = "cancelled"
	case !dstUp:
		abort = "target host " + mg.Target + " went down mid-transfer"
	case x.timedOut(mg):
		abort = fmt.Sprintf("transfer did not complete within %s", TransferTimeout)
	}
	if mg.SourceGone && (abort != "" || mg.Abort != "") {
		return x.endGone(ctx, mg, abort)
	}
	if abort == "" || mg.Abort != "" {
		return nil
	}
	x.log.Info("aborting migration", "id", mg.Name, "vm", mg.VMKey(), "reason", abort)
	_, err := x.repo.UpdateMigration(ctx, mg.Name, func(c *model.Migration) error {
		if c.Phase != model.MigrationTransferring || c.Abort != "" {
			return state.ErrSkip
		}
		c.Abort = abort
		return nil
	})
	return err
}

// timedOut reports whether mg's transfer ran past TransferTimeout.
func (x *migrator) timedOut(mg *model.Migration) bool {
	return mg.StartedAt != nil && x.now().Sub(*mg.StartedAt) > TransferTimeout
}

// endGone ends a transfer whose source reported the VM gone (its agent
// restarted and lost track) while the target, up, never reported it
// arrived: an abort has nobody to answer it, so once one is due (cancel,
// timeout) the migration fails at once. The VM stays assigned to the
// source, unmarked, for recovery; the target drops anything prepared.
func (x *migrator) endGone(ctx context.Context, mg *model.Migration, why string) error {
	if why == "" {
		why = mg.Abort
	}
	phase := model.MigrationFailed
	if mg.CancelRequested {
		phase = model.MigrationCancelled
	}
	note := fmt.Sprintf("migration %s ended (%s): the VM left %s and never arrived on %s; recovery decides", mg.Name, why, mg.Source, mg.Target)
	return x.fail(ctx, mg, phase, why+"; the VM left the source and never arrived on "+mg.Target, note)
}

// stop ends a migration whose VM went away: before the transfer at once,
// during it by asking the source to abort first (unless the source has
// nothing left to abort).
func (x *migrator) stop(ctx context.Context, mg *model.Migration, phase model.MigrationPhase, reason string) error {
	if mg.Phase == model.MigrationTransferring && mg.SourceError == "" && !mg.SourceDone && !mg.SourceGone {
		if mg.Abort != "" {
			return nil
		}
		_, err := x.repo.UpdateMigration(ctx, mg.Name, func(c *model.Migration) error {
			if c.Abort != "" {
				return state.ErrSkip
			}
			c.Abort, c.CancelRequested = reason, true
			return nil
		})
		return err
	}
	return x.fail(ctx, mg, phase, reason, "")
}

// addMigrationHolds adds to want (allocations recomputed from the VMs)
// the capacity each unfinished migration holds on its target, so that the
// repair at the start of a term keeps the holds.
func (r *reconciler) addMigrationHolds(ctx context.Context, want map[string]model.Allocation, vms []*model.VM) error {
	migs, _, err := r.repo.ListMigrations(ctx, "")
	if err != nil {
		return err
	}
	byKey := make(map[string]*model.VM, len(vms))
	for _, vm := range vms {
		byKey[vm.Key()] = vm
	}
	for _, mg := range migs {
		vm := byKey[mg.VMKey()]
		if mg.Phase.Final() || !mg.HoldTarget || vm == nil || vm.Status.Host == mg.Target {
			continue
		}
		hold := &model.VM{Meta: model.Meta{Name: mg.VM, Project: mg.Project}, Spec: mg.Spec}
		want[mg.Target] = allocAdd(want[mg.Target], mg.Target, hold)
	}
	return nil
}
