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

// progressEvery bounds how often the source reports migration progress.
const progressEvery = 500 * time.Millisecond

// migWork is the agent's bookkeeping of one migration it takes part in.
type migWork struct {
	busy   bool               // a worker runs for it
	cancel context.CancelFunc // cancels a running MigrateOut
	// prepared and sent: MigrateIn / MigrateOut ran in this process (a
	// stale listing must not run them again); arrived and cleaned: the
	// server took that report.
	prepared, sent   bool
	arrived, cleaned bool
	resumed          bool // the paused copy of an unanswered switchover
}

// migrations is the agent's side of live and cold migration. It long-polls
// the migrations this host takes part in and acts on each:
//
//   - target, preparing-target: MigrateIn (never Start: the incoming VM
//     runs only when the transfer completes) and report the address;
//   - target, transferring: report Arrived once the driver lists the VM;
//   - source, transferring: MigrateOut with progress reports, then the
//     result or the error; an Abort from the controller cancels it;
//   - after the end: the target drops a prepared VM of a failed or
//     cancelled migration, the source the copy left of a completed one.
//
// Converge leaves a VM marked with a migration (Status.Migration) alone,
// so the source never re-creates a VM that left it.
type migrations struct {
	a    *Agent
	mu   sync.Mutex
	work map[string]*migWork
	last []model.Migration
}

// migrationsLoop polls and acts until ctx ends; it also re-acts every
// StatusInterval so that a failed report or a pending cleanup is retried.
func (a *Agent) migrationsLoop(ctx context.Context) {
	ms := &migrations{a: a, work: map[string]*migWork{}}
	var wg sync.WaitGroup
	defer wg.Wait()
	got := make(chan api.AgentMigrations, 1)
	wg.Go(func() { ms.poll(ctx, got) })
	t := time.NewTicker(a.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case am := <-got:
			ms.mu.Lock()
			ms.last = am.Items
			ms.mu.Unlock()
		case <-t.C:
		}
		ms.mu.Lock()
		items := ms.last
		ms.mu.Unlock()
		for i := range items {
			ms.handle(ctx, &wg, items[i])
		}
	}
}

func (ms *migrations) poll(ctx context.Context, out chan api.AgentMigrations) {
	a := ms.a
	bo := newBackoff(200*time.Millisecond, 10*time.Second)
	var after int64
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, a.cfg.PollWait+15*time.Second)
		var am api.AgentMigrations
		path := fmt.Sprintf("%s/migrations?after=%d&wait=%s", api.AgentPrefix, after, a.cfg.PollWait)
		err := a.client.do(pctx, http.MethodGet, path, nil, &am)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.log.Warn("migrations poll failed", "err", err)
			if sleepCtx(ctx, bo.next()) != nil {
				return
			}
			continue
		}
		bo.reset()
		after = am.Revision
		select {
		case <-out: // drop an unread older answer
		default:
		}
		out <- am
	}
}

// handle starts the work one migration needs of this host, unless a
// worker already runs for it.
func (ms *migrations) handle(ctx context.Context, wg *sync.WaitGroup, m model.Migration) {
	a := ms.a
	host := a.cfg.HostName
	ms.mu.Lock()
	w := ms.work[m.Name]
	if w == nil {
		w = &migWork{}
		ms.work[m.Name] = w
	}
	if w.busy {
		if m.Source == host && m.Abort != "" && w.cancel != nil {
			a.log.Info("aborting outgoing migration", "id", m.Name, "vm", m.VMKey(), "reason", m.Abort)
			w.cancel()
		}
		ms.mu.Unlock()
		return
	}
	var job func(context.Context)
	switch {
	case m.Target == host:
		job = ms.targetJob(m, w)
	case m.Source == host:
		job = ms.sourceJob(ctx, m, w)
	}
	if job == nil {
		ms.mu.Unlock()
		return
	}
	w.busy = true
	ms.mu.Unlock()
	wg.Go(func() {
		defer func() {
			ms.mu.Lock()
			w.busy, w.cancel = false, nil
			ms.mu.Unlock()
		}()
		job(ctx)
	})
}

// targetJob returns the target's next step for m, or nil. Called with
// ms.mu held.
func (ms *migrations) targetJob(m model.Migration, w *migWork) func(context.Context) {
	switch {
	case m.Phase == model.MigrationPreparingTarget && m.TargetAddr == "" && m.TargetError == "" && !w.prepared:
		w.prepared = true
		return func(ctx context.Context) { ms.prepare(ctx, m) }
	case m.Phase == model.MigrationTransferring && !m.Arrived && !w.arrived:
		return func(ctx context.Context) {
			switch {
			case ms.listed(ctx, m):
				if ms.report(ctx, m, api.MigrationReport{Arrived: true}) == nil {
					ms.mark(m.Name, func(w *migWork) { w.arrived = true })
				}
			case (m.SourceUnsure || m.SourceGone) && !m.TargetAbsent:
				// The source never heard our answer to the switchover (or
				// restarted without the VM), and the VM is not here: say
				// so, the controller ends the migration.
				_ = ms.report(ctx, m, api.MigrationReport{Absent: true})
			}
		}
	case (m.Phase == model.MigrationFailed || m.Phase == model.MigrationCancelled) && !m.TargetCleaned && !w.cleaned:
		return func(ctx context.Context) { ms.cleanTarget(ctx, m) }
	}
	return nil
}

// sourceJob returns the source's next step for m, or nil. Called with
// ms.mu held.
func (ms *migrations) sourceJob(ctx context.Context, m model.Migration, w *migWork) func(context.Context) {
	switch {
	case m.Phase == model.MigrationTransferring && m.TargetAddr != "" && !m.SourceDone && m.SourceError == "" && !m.SourceGone && !w.sent:
		w.sent = true
		wctx, cancel := context.WithCancel(ctx)
		w.cancel = cancel
		return func(context.Context) {
			defer cancel()
			ms.send(wctx, ctx, m)
		}
	case m.Phase == model.MigrationCompleted && !m.SourceCleaned && !w.cleaned:
		return func(ctx context.Context) { ms.cleanSource(ctx, m) }
	case m.Phase == model.MigrationFailed && m.SourceUnsure && m.TargetAbsent && !w.resumed:
		return func(ctx context.Context) { ms.resumeUnsure(ctx, m) }
	}
	return nil
}

func (ms *migrations) mark(id string, fn func(*migWork)) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if w := ms.work[id]; w != nil {
		fn(w)
	}
}

// listed says whether the driver lists m's VM as one of its own.
func (ms *migrations) listed(ctx context.Context, m model.Migration) bool {
	_, ok := ms.info(ctx, m)
	return ok
}

func (ms *migrations) info(ctx context.Context, m model.Migration) (hypervisor.Info, bool) {
	infos, err := ms.a.cfg.Driver.List(ctx)
	if err != nil {
		return hypervisor.Info{}, false
	}
	id := vmID(m.Project, m.VM)
	for _, in := range infos {
		if in.ID == id {
			return in, true
		}
	}
	return hypervisor.Info{}, false
}

// prepare makes the target ready to receive and reports the address. A
// leftover incoming VM of an earlier attempt (this agent restarted) is
// dropped and prepared again; a VM of that id that runs here is not
// touched, and the migration is refused.
func (ms *migrations) prepare(ctx context.Context, m model.Migration) {
	a := ms.a
	vm := &model.VM{Meta: model.Meta{Name: m.VM, Project: m.Project, UID: m.VMUID}, Spec: m.Spec}
	cfg, err := a.vmConfig(ctx, vm)
	if err != nil {
		_ = ms.report(ctx, m, api.MigrationReport{TargetError: err.Error()})
		return
	}
	addr, err := a.cfg.Driver.MigrateIn(ctx, cfg)
	if errors.Is(err, hypervisor.ErrExists) && !ms.listed(ctx, m) {
		a.log.Info("dropping an earlier incoming VM to prepare again", "id", m.Name, "vm", m.VMKey())
		if derr := a.cfg.Driver.Delete(ctx, cfg.ID); derr != nil && !errors.Is(derr, hypervisor.ErrNotFound) {
			err = derr
		} else {
			addr, err = a.cfg.Driver.MigrateIn(ctx, cfg)
		}
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		a.log.Warn("preparing incoming migration failed", "id", m.Name, "vm", m.VMKey(), "err", err)
		ms.reportUntil(ctx, m, api.MigrationReport{TargetError: err.Error()})
		return
	}
	a.log.Info("ready to receive", "id", m.Name, "vm", m.VMKey(), "addr", addrForLog(addr))
	ms.reportUntil(ctx, m, api.MigrationReport{Addr: addr})
}

// send runs MigrateOut under wctx (cancelled on Abort) and reports
// progress and the outcome under ctx (the agent's).
func (ms *migrations) send(wctx, ctx context.Context, m model.Migration) {
	a := ms.a
	id := vmID(m.Project, m.VM)
	if m.Abort != "" || !ms.listed(ctx, m) {
		// Not started here (or this agent restarted and the VM left).
		rep := api.MigrationReport{SourceError: "aborted before the transfer began: " + m.Abort}
		if !ms.listed(ctx, m) {
			rep = api.MigrationReport{SourceGone: true}
		}
		_ = ms.report(ctx, m, rep)
		return
	}
	opts := migrateOptions(m.Options)
	pr := newProgressReporter(func(p model.MigrationProgress) {
		_ = ms.report(ctx, m, api.MigrationReport{Progress: &p})
	})
	a.log.Info("sending VM", "id", m.Name, "vm", m.VMKey(), "to", m.Target, "addr", addrForLog(m.TargetAddr))
	res, err := a.cfg.Driver.MigrateOut(wctx, id, m.TargetAddr, opts, pr.observe)
	pr.stop()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		msg := err.Error()
		if wctx.Err() != nil {
			msg = "aborted: " + msg
		}
		unsure := errors.Is(err, hypervisor.ErrOutcomeUnknown)
		a.log.Warn("outgoing migration failed", "id", m.Name, "vm", m.VMKey(), "err", msg, "outcomeUnknown", unsure)
		ms.reportUntil(ctx, m, api.MigrationReport{SourceError: msg, Unsure: unsure})
		return
	}
	if ms.listed(ctx, m) {
		a.log.Warn("driver still lists a VM it migrated away", "vm", m.VMKey())
	}
	a.log.Info("VM sent", "id", m.Name, "vm", m.VMKey(), "total", res.Total, "downtime", res.Downtime)
	ms.reportUntil(ctx, m, api.MigrationReport{Result: resultOf(res)})
}

// addrForLog is a target address without its one-time key (logs are
// read by more people than the agents).
func addrForLog(addr string) string {
	u, err := url.Parse(addr)
	if err != nil {
		return "[unparsable address]"
	}
	q := u.Query()
	if q.Has("key") {
		q.Set("key", "[redacted]")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// migrateOptions turns a migration's stored options into the driver's;
// zero values keep the driver's defaults.
func migrateOptions(o model.MigrationOptions) hypervisor.MigrateOptions {
	return hypervisor.MigrateOptions{
		DowntimeLimit:   time.Duration(o.DowntimeLimitMs) * time.Millisecond,
		BandwidthBps:    o.BandwidthBps,
		MaxBandwidthBps: o.MaxBandwidthBps,
		AllowPostCopy:   o.AllowPostCopy,
		MultifdChannels: o.MultifdChannels,
		StageTimeout:    time.Duration(o.StageTimeoutMs) * time.Millisecond,
	}
}

// resultOf is what the migration records of a driver's result.
func resultOf(res hypervisor.MigrationResult) *model.MigrationResult {
	return &model.MigrationResult{
		TotalMs: res.Total.Milliseconds(), DowntimeMs: res.Downtime.Milliseconds(), BytesSent: res.Bytes,
		GuestGapMs: res.GuestGap.Milliseconds(), GuestGapBy: res.GuestGapBy, PauseMs: res.Pause.Milliseconds(),
		RAMBytes: res.RAMBytes, DiskBytes: res.DiskBytes,
		SharedDisks: res.SharedDisks, Stage: res.Stage, Notes: res.Notes, PostCopy: res.PostCopy, TLS: res.TLS,
	}
}

// resumeUnsure resumes the copy an unanswered switchover left paused here,
// once the target said it does not have the VM and the migration failed.
func (ms *migrations) resumeUnsure(ctx context.Context, m model.Migration) {
	a := ms.a
	in, ok := ms.info(ctx, m)
	if ok && in.State == hypervisor.StatePaused {
		if err := a.cfg.Driver.Resume(ctx, in.ID); err != nil {
			a.log.Warn("resuming the VM after an unanswered switchover failed", "id", m.Name, "vm", m.VMKey(), "err", err)
			return
		}
		a.log.Info("resumed the VM: the target never took it over", "id", m.Name, "vm", m.VMKey())
	}
	ms.mark(m.Name, func(w *migWork) { w.resumed = true })
}

// cleanTarget drops what a failed or cancelled migration left here: the
// prepared (incoming) VM. A VM the driver lists as its own is never
// deleted here: it may be the only copy (the transfer completed while the
// source went down); it is left for the operator and recovery.
func (ms *migrations) cleanTarget(ctx context.Context, m model.Migration) {
	a := ms.a
	if ms.assignedHere(m) {
		ms.confirmClean(ctx, m)
		return
	}
	if ms.listed(ctx, m) {
		a.log.Warn("a failed migration's VM runs here; leaving it to recovery", "id", m.Name, "vm", m.VMKey())
		return
	}
	if err := a.cfg.Driver.Delete(ctx, vmID(m.Project, m.VM)); err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
		a.log.Warn("dropping an incoming VM failed", "id", m.Name, "vm", m.VMKey(), "err", err)
		return
	}
	a.log.Info("dropped the incoming VM of an unfinished migration", "id", m.Name, "vm", m.VMKey(), "phase", m.Phase)
	ms.confirmClean(ctx, m)
}

// cleanSource drops the copy a completed migration left here (a cold
// migration's stopped VM), once the VM is no longer assigned here.
func (ms *migrations) cleanSource(ctx context.Context, m model.Migration) {
	a := ms.a
	if ms.assignedHere(m) {
		return // the assignment that moved it away has not arrived yet
	}
	if ms.listed(ctx, m) {
		id := vmID(m.Project, m.VM)
		var err error
		if r, ok := a.cfg.Driver.(hypervisor.MigrationReleaser); ok {
			err = r.ReleaseMigrated(ctx, id)
		} else {
			err = a.cfg.Driver.Delete(ctx, id)
		}
		if err != nil && !errors.Is(err, hypervisor.ErrNotFound) {
			a.log.Warn("dropping the copy of a migrated VM failed", "id", m.Name, "vm", m.VMKey(), "err", err)
			return
		}
		a.log.Info("dropped the copy of a VM that moved away", "id", m.Name, "vm", m.VMKey(), "to", m.Target)
	}
	ms.confirmClean(ctx, m)
}

func (ms *migrations) confirmClean(ctx context.Context, m model.Migration) {
	if ms.report(ctx, m, api.MigrationReport{Cleaned: true}) == nil {
		ms.mark(m.Name, func(w *migWork) { w.cleaned = true })
	}
}

// assignedHere says whether the last assignments list m's VM on this host.
func (ms *migrations) assignedHere(m model.Migration) bool {
	a := ms.a
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.assigned[m.VMKey()]
	return ok
}

func (ms *migrations) report(ctx context.Context, m model.Migration, rep api.MigrationReport) error {
	path := fmt.Sprintf("%s/migrations/%s/report", api.AgentPrefix, url.PathEscape(m.Name))
	err := ms.a.client.do(ctx, http.MethodPut, path, rep, nil)
	if err != nil && ctx.Err() == nil {
		ms.a.log.Warn("migration report failed", "id", m.Name, "err", err)
	}
	return err
}

// reportUntil retries an outcome report until the server takes it (or
// answers that it cannot: 4xx), so that a server restart loses nothing.
func (ms *migrations) reportUntil(ctx context.Context, m model.Migration, rep api.MigrationReport) {
	bo := newBackoff(200*time.Millisecond, 5*time.Second)
	for {
		err := ms.report(ctx, m, rep)
		if st := httpStatus(err); err == nil || (st >= 400 && st < 500) || ctx.Err() != nil {
			return
		}
		if sleepCtx(ctx, bo.next()) != nil {
			return
		}
	}
}

// progressReporter turns the driver's progress callbacks (which must not
// block) into at most one report per progressEvery, with a rate-based
// ETA.
type progressReporter struct {
	mu        sync.Mutex
	disksAt   time.Time // the first disk report, and its bytes
	disksFrom int64
	last      *model.MigrationProgress
	kick      chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
}

func newProgressReporter(send func(model.MigrationProgress)) *progressReporter {
	p := &progressReporter{kick: make(chan struct{}, 1), done: make(chan struct{})}
	p.wg.Go(func() {
		var sent time.Time
		for {
			select {
			case <-p.done:
				return
			case <-p.kick:
			}
			if wait := progressEvery - time.Since(sent); wait > 0 {
				select {
				case <-p.done:
					return
				case <-time.After(wait):
				}
			}
			p.mu.Lock()
			cur := p.last
			p.mu.Unlock()
			if cur != nil {
				send(*cur)
				sent = time.Now()
			}
		}
	})
	return p
}

func (p *progressReporter) observe(mp hypervisor.MigrationProgress) { p.observeAt(time.Now(), mp) }

func (p *progressReporter) observeAt(now time.Time, mp hypervisor.MigrationProgress) {
	p.mu.Lock()
	out := model.MigrationProgress{BytesSent: mp.Transferred, BytesLeft: mp.Remaining, BytesTotal: mp.Total,
		DirtyRate: mp.DirtyRate, ExpectedDowntimeMs: mp.ExpectedDowntime.Milliseconds(),
		Stage: mp.Stage, Note: mp.Note, Iteration: mp.Iteration, BandwidthBps: mp.Bandwidth, ThrottlePct: mp.Throttle,
		DiskSent: mp.DiskTransferred, DiskTotal: mp.DiskTotal}
	if p.last != nil {
		if out.Note == "" && out.Stage == p.last.Stage {
			out.Note = p.last.Note // keep why the stage began until the next one
		}
		if out.DiskTotal == 0 {
			out.DiskSent, out.DiskTotal = p.last.DiskSent, p.last.DiskTotal
		}
		if out.BytesTotal == 0 { // a report without memory counters (the switch-over's)
			out.BytesSent, out.BytesLeft, out.BytesTotal = p.last.BytesSent, p.last.BytesLeft, p.last.BytesTotal
		}
	}
	if out.Stage == hypervisor.MigrationStageSwitchover {
		out.BytesLeft = 0
	}
	out.ETASeconds = p.eta(now, mp)
	p.last = &out
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// eta estimates the seconds left, 0 when it cannot say. Disks: at the
// mirrors' average rate so far. Memory: pre-copy shrinks the rest at the
// stream's rate less what the guest dirties; when the guest dirties more
// than four fifths of that, the rest barely shrinks and the driver's
// escalation, not the rate, decides when it ends (estimates of minutes
// that the next escalation made wrong were shown before).
func (p *progressReporter) eta(now time.Time, mp hypervisor.MigrationProgress) float64 {
	switch {
	case mp.Stage == hypervisor.MigrationStageDisks && mp.DiskTotal > 0:
		if p.disksAt.IsZero() {
			p.disksAt, p.disksFrom = now, mp.DiskTransferred
			return 0
		}
		el, done := now.Sub(p.disksAt).Seconds(), mp.DiskTransferred-p.disksFrom
		if el <= 0 || done <= 0 {
			return 0
		}
		return float64(mp.DiskTotal-mp.DiskTransferred) / (float64(done) / el)
	case mp.Stage == hypervisor.MigrationStageSwitchover || mp.Remaining <= 0 || mp.Bandwidth <= 0:
		return 0
	}
	if net := mp.Bandwidth - mp.DirtyRate; net >= mp.Bandwidth/5 {
		return float64(mp.Remaining) / float64(net)
	}
	return 0
}

func (p *progressReporter) stop() {
	close(p.done)
	p.wg.Wait()
}
