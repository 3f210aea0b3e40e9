package qemu

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// Live migration (docs/migration-qemu.md has the whole story):
//
//	target  MigrateIn (migrate_in.go): disks (adopted on shared storage,
//	        else created empty), QEMU -incoming defer, NBD exports, a
//	        control listener; returns qemu://host?mig&nbd&ctl&key[&tls].
//	source  MigrateOut: control "prepare" (the target sets post-copy and
//	        TLS and starts listening), TLS credentials, capabilities and
//	        parameters, one blockdev-mirror per local disk into the
//	        target's export until ready, then "migrate". Every poll feeds
//	        the converger (migrate_converge.go), which escalates when
//	        pre-copy does not converge.
//	switch  once the source is paused (pre-copy completed, or post-copy
//	        switched): cancel the mirrors (in sync), "done" → the target
//	        stops NBD, takes the shared disks, resumes the guest.
//	source  quits QEMU and deletes its copy (shared disks are now the
//	        target's); asks the target for its ticks (guest gap).
//
// Before "done" every failure puts the source back (migrate_cancel, mirrors
// dropped, the guest resumed if the migration paused it) and the target
// deletes its copy. After "done" without an answer the outcome is unknown:
// the source stays paused rather than risk two running copies.
//
// A VM that is not running moves cold (migrate_cold.go): disks only.
//
// VMs with snapshots or hot-plugged vCPUs/DIMMs are refused (their layer
// chain / device set would not match on the target).

// ErrMigrationOutcome is returned when the switchover was sent but its
// answer never came: the guest may run on the target; the source is left
// paused (never resumed automatically).
// It wraps hypervisor.ErrOutcomeUnknown.
var ErrMigrationOutcome = fmt.Errorf("qemu: %w", hypervisor.ErrOutcomeUnknown)

// outgoing is one MigrateOut in progress.
type outgoing struct {
	d        *Driver
	v        *vm
	p        *process
	a        migAddr
	opts     hypervisor.MigrateOptions
	progress func(hypervisor.MigrationProgress)
	tlsDir   string
	ctl      *ctlConn
	ticks    *tickWatcher
	start    time.Time
	running  bool // the guest ran when the migration began
	shared   map[string]string
	mirrored bool
	doneSent bool
	postcopy bool // switched to post-copy
	lowStart bool // pre-copy starts at DowntimeTarget (lowStartSafe)
	channels int  // multifd channels asked for (1: a single stream)
	choose   bool // ... or at most: chooseChannels decides (migrate_multifd.go)
	res      hypervisor.MigrationResult
	lastRep  time.Time
	// stops delivers the source's STOP events from the start of the
	// stream; stopped is when QEMU paused the guest for the switchover
	// and resumed when the target resumed it (the target's clock).
	stops            *qmp.Subscription
	stopped, resumed time.Time
	// switchoverBw is the avail-switchover-bandwidth set (0: QEMU's own
	// estimate); noSwitchoverBw: this QEMU lacks the parameter.
	switchoverBw   int64
	noSwitchoverBw bool
	unboost        func() // ends the source's boost (nil: none)
}

// MigrateOut migrates the VM to addr from MigrateIn on another driver:
// live when it runs (or is paused), cold (disks only, migrate_cold.go)
// when it is stopped or crashed; on success the VM is gone here. See
// MigrateOptions for the knobs and docs/migration-qemu.md for the
// contract.
func (d *Driver) MigrateOut(ctx context.Context, id, addr string, opts hypervisor.MigrateOptions, progress func(hypervisor.MigrationProgress)) (res hypervisor.MigrationResult, err error) {
	defer d.public(&err, "migrate out", id)
	opts = migrateDefaults(opts)
	v, err := d.lock(id)
	if err != nil {
		return hypervisor.MigrationResult{}, err
	}
	defer v.mu.Unlock()
	a, err := parseMigAddr(addr)
	if err != nil {
		return hypervisor.MigrationResult{}, err
	}
	p := v.proc
	switch {
	case len(v.rec.Snapshots) > 0:
		return hypervisor.MigrationResult{}, fmt.Errorf("qemu: migrate %s: delete its snapshots first: %w", id, hypervisor.ErrBadState)
	case p != nil && v.rec.Run != nil && (len(v.rec.Run.HotCPUs) > 0 || len(v.rec.Run.DIMMs) > 0):
		return hypervisor.MigrationResult{}, fmt.Errorf("qemu: migrate %s: restart it after the live resize first: %w", id, hypervisor.ErrBadState)
	case p != nil:
		if err := checkTargetMachine(runMachineType(v.rec.Run), a.machine); err != nil {
			return hypervisor.MigrationResult{}, fmt.Errorf("qemu: migrate %s: %w", id, err)
		}
	}
	m := &outgoing{d: d, v: v, p: p, a: a, opts: opts, progress: progress, start: d.clock.Now(),
		lowStart: lowStartSafe(d.accel, d.qemuVersion(ctx))}
	var fixed bool
	if m.channels, fixed, err = multifdChannels(opts, d.cfg.MigrationMultifdChannels); err != nil {
		return m.res, fmt.Errorf("qemu: migrate %s: %w", id, err)
	}
	m.choose = !fixed
	m.tlsDir = opts.TLSDir
	if m.tlsDir == "" {
		m.tlsDir = d.migrationTLSDir()
	}
	switch {
	case a.tlsName != "" && m.tlsDir == "":
		return m.res, fmt.Errorf("qemu: migrate %s: the target requires TLS and this host has no migration TLS material: %w", id, ErrMigrationTLS)
	case a.tlsName == "" && m.tlsDir != "" && !opts.Insecure:
		return m.res, fmt.Errorf("qemu: migrate %s: the target offers no TLS (set Insecure to allow plain TCP): %w", id, ErrMigrationTLS)
	}
	m.res.TLS = a.tlsName != ""
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout+2*time.Minute)
	defer cancel()
	if p == nil { // stopped or crashed: disks only (migrate_cold.go)
		res, err := m.runCold(ctx)
		if err != nil {
			d.reown(v.rec)
		}
		return res, err
	}
	if err := m.run(ctx); err != nil {
		if m.doneSent {
			if m.unboost != nil {
				m.unboost()
			}
			d.log.Error("qemu: migration switchover unanswered; source left paused", "vm", id, "err", err)
			return m.res, fmt.Errorf("qemu: migrate %s: %w: %w", id, ErrMigrationOutcome, err)
		}
		m.abort()
		d.reown(v.rec)
		// QMP notices a killed QEMU a moment before its exit is reaped.
		if p.hasExited() || (errors.Is(err, qmp.ErrClosed) && p.wait(context.Background(), 2*time.Second) == nil) {
			// Say what happened rather than how QMP noticed it.
			return m.res, fmt.Errorf("qemu: migrate %s: the source QEMU died mid-transfer, the VM crashed here: %w", id, err)
		}
		return m.res, fmt.Errorf("qemu: migrate %s: %w", id, err)
	}
	// The target runs the guest now: retire our copy.
	p.quit(ctx, 10*time.Second)
	if m.unboost != nil {
		m.unboost() // the VMs' group's share of it
	}
	d.reapLocked(v, p)
	if err := d.deleteLocked(ctx, v); err != nil {
		d.log.Warn("qemu: deleting the migrated-away copy", "vm", id, "err", err)
	}
	m.measureGap()
	m.ctl.close()
	d.log.Info("qemu: migrated", "vm", id, "total", m.res.Total, "downtime", m.res.Downtime, "gap", m.res.GuestGap,
		"stage", m.res.Stage, "bytes", m.res.Bytes, "tls", m.res.TLS)
	return m.res, nil
}

func (m *outgoing) run(ctx context.Context) error {
	st, err := m.p.qmp.QueryStatus(ctx)
	if err != nil {
		return err
	}
	m.running = st.Running
	m.ticks = watchTicks(m.d.SerialLog(m.v.rec.Config.ID), true, m.d.clock.Now)
	postcopy := m.opts.AllowPostCopy && !m.opts.NoEscalation
	if m.choose {
		m.chooseChannels(ctx)
	}
	if err := m.prepare(ctx, ctlMsg{PostCopy: postcopy, Multifd: m.channels}); err != nil {
		return err
	}
	if err := m.setup(ctx, postcopy); err != nil {
		return err
	}
	m.report(hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageDisks}, true)
	if err := m.mirrorDisks(ctx); err != nil {
		return err
	}
	m.awaitTick()
	// The source's CPU weight is raised for the memory stream: the last
	// pages go while the guest stands still, and a starved migration
	// thread stretched that past the cap (migrate_boost.go). Put back on
	// failure and once this QEMU has quit.
	m.unboost = m.d.boost(m.v.rec, m.p)
	m.stops = m.p.qmp.Subscribe("STOP")
	defer m.stops.Close()
	uri, release, err := m.streamURI(ctx)
	if err != nil {
		return err
	}
	err = m.p.qmp.Execute(ctx, "migrate", qmp.Args{"uri": uri}, nil)
	release(err != nil)
	if err != nil {
		return err
	}
	mi, err := m.transfer(ctx)
	if err != nil {
		return err
	}
	return m.switchover(ctx, mi)
}

// setup adds the TLS credentials and sets capabilities and parameters.
func (m *outgoing) setup(ctx context.Context, postcopy bool) error {
	q := m.p.qmp
	caps := []qmp.Args{
		{"capability": "events", "state": true}, // MIGRATION events end the wait at once
		{"capability": "auto-converge", "state": !m.opts.NoEscalation},
		{"capability": "postcopy-ram", "state": postcopy},
	}
	mfCap, mfParams := multifdSetup(m.res.MultifdChannels)
	caps = append(caps, mfCap)
	if err := q.Execute(ctx, "migrate-set-capabilities", qmp.Args{"capabilities": caps}, nil); err != nil {
		return err
	}
	params := qmp.Args{
		"downtime-limit": startDowntime(m.opts, m.lowStart).Milliseconds(), // the converger raises it to DowntimeLimit
		"max-bandwidth":  m.opts.BandwidthBps,
		"tls-creds":      "", "tls-hostname": "",
	}
	for k, v := range mfParams {
		params[k] = v
	}
	if !m.opts.NoEscalation { // auto-converge on, but inert until its stage
		params["cpu-throttle-initial"], params["cpu-throttle-increment"], params["max-cpu-throttle"] = throttleInert, 1, throttleInert
	}
	if m.res.TLS {
		if err := m.d.addTLS(ctx, q, m.v.rec, m.tlsDir, false); err != nil && !qmp.IsClass(err, "GenericError") {
			return err
		}
		params["tls-creds"], params["tls-hostname"] = tlsClientObj, m.a.tlsName
	}
	return q.Execute(ctx, "migrate-set-parameters", params, nil)
}

// awaitTick waits (≤ 1.5 s) for one fresh TICK when the guest prints
// them, so the guest gap has a stamped tick from before the switchover.
func (m *outgoing) awaitTick() {
	if len(guestTicksIn(m.d.SerialLog(m.v.rec.Config.ID))) > 0 {
		m.ticks.waitTicks(1, 1500*time.Millisecond)
	}
}

// migInfo is the part of query-migrate the converger reads.
type migInfo struct {
	Status           string `json:"status"`
	TotalTime        int64  `json:"total-time"`
	Downtime         int64  `json:"downtime"`
	ExpectedDowntime int64  `json:"expected-downtime"`
	ErrorDesc        string `json:"error-desc"`
	Throttle         int    `json:"cpu-throttle-percentage"`
	RAM              *struct {
		Transferred int64   `json:"transferred"`
		Remaining   int64   `json:"remaining"`
		Total       int64   `json:"total"`
		DirtyRate   int64   `json:"dirty-pages-rate"`
		PageSize    int64   `json:"page-size"`
		Mbps        float64 `json:"mbps"`
		SyncCount   int64   `json:"dirty-sync-count"`
	} `json:"ram"`
}

// transfer polls the migration, escalating as the converger says, until
// the source is paused for the switchover (pre-copy completed, or
// post-copy entered).
func (m *outgoing) transfer(ctx context.Context) (migInfo, error) {
	// A status change (completed: the guest is paused now) ends the poll
	// interval at once; every 50 ms the converger gets a sample.
	sub := m.p.qmp.Subscribe("MIGRATION")
	defer sub.Close()
	conv := newConverger(m.opts, m.lowStart)
	if m.res.MultifdChannels > 1 {
		conv.overChannels()
	}
	if m.res.MultifdChannels == 1 {
		defer func() { // what one stream moves, for the next choice
			if bw := conv.streamBandwidth(); bw > 0 {
				m.d.streamBw.Store(bw)
			}
		}()
	}
	stage := hypervisor.MigrationStagePreCopy
	m.res.Stage = stage
	began := m.d.clock.Now()
	note := "memory pre-copy"
	for {
		var mi migInfo
		if err := m.p.qmp.Execute(ctx, "query-migrate", nil, &mi); err != nil {
			return mi, err
		}
		switch mi.Status {
		case "completed":
			return mi, nil
		case "failed", "cancelled":
			return mi, fmt.Errorf("qemu: migration %s: %s", mi.Status, mi.ErrorDesc)
		case "postcopy-active":
			if st, err := m.p.qmp.QueryStatus(ctx); err == nil && !st.Running {
				return mi, nil
			}
		case "postcopy-paused":
			// The stream broke between the switch to post-copy and the
			// target's resume: neither side can go back, so recover.
			if err := m.recoverPostCopy(ctx); err != nil {
				return mi, err
			}
		}
		s := sampleOf(mi, m.d.clock.Now().Sub(began))
		if mi.Status == "active" {
			if dec, ok := conv.observe(s); ok {
				if dec.fail {
					return mi, fmt.Errorf("qemu: migration gave up: %s", dec.reason)
				}
				stage, note = dec.next, dec.reason
				if err := m.escalate(ctx, dec); err != nil {
					return mi, fmt.Errorf("qemu: escalating to %s: %w", stage, err)
				}
				m.res.Stage = stage
				m.res.Notes = append(m.res.Notes, stage+": "+note)
				m.d.log.Info("qemu: migration escalated", "vm", m.v.rec.Config.ID, "stage", stage, "why", note)
			}
			m.planSwitchover(ctx, conv.switchoverBandwidth())
		}
		m.report(progressOf(mi, s, stage, note), note != "")
		note = ""
		if err := m.keepAlive(); err != nil {
			return mi, err
		}
		select {
		case <-ctx.Done():
			return mi, fmt.Errorf("qemu: waiting for the migration: %w", ctx.Err())
		case <-m.p.exited:
			return mi, errors.New("qemu: the source QEMU exited")
		case <-sub.C:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func sampleOf(mi migInfo, elapsed time.Duration) migSample {
	s := migSample{Elapsed: elapsed, Throttle: mi.Throttle}
	if mi.RAM != nil {
		s.Iteration, s.Remaining = mi.RAM.SyncCount, mi.RAM.Remaining
		s.DirtyRate = mi.RAM.DirtyRate * max(mi.RAM.PageSize, 4096)
		s.Bandwidth = int64(mi.RAM.Mbps * 1e6 / 8)
	}
	return s
}

func progressOf(mi migInfo, s migSample, stage, note string) hypervisor.MigrationProgress {
	pr := hypervisor.MigrationProgress{Remaining: s.Remaining, DirtyRate: s.DirtyRate,
		ExpectedDowntime: time.Duration(mi.ExpectedDowntime) * time.Millisecond, Stage: stage, Note: note,
		Iteration: s.Iteration, Bandwidth: s.Bandwidth, Throttle: s.Throttle, Elapsed: s.Elapsed}
	if mi.RAM != nil {
		pr.Transferred, pr.Total = mi.RAM.Transferred, mi.RAM.Total
	}
	return pr
}

// escalate applies one escalation decision: the parameters first, then
// the switch to post-copy.
func (m *outgoing) escalate(ctx context.Context, dec decision) error {
	q := m.p.qmp
	params := qmp.Args{}
	if dec.downtime > 0 {
		params["downtime-limit"] = dec.downtime.Milliseconds()
	}
	if dec.bandwidth > 0 {
		params["max-bandwidth"] = dec.bandwidth
	}
	if dec.throttle > 0 {
		params["max-cpu-throttle"], params["cpu-throttle-initial"], params["cpu-throttle-increment"] = throttleMax, dec.throttle, throttleStep
	}
	if dec.ceiling > 0 { // QEMU raises the throttle by its increment up to it
		params["max-cpu-throttle"], params["cpu-throttle-increment"] = dec.ceiling, dec.ceiling-throttleMax
	}
	if len(params) > 0 {
		if err := q.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
			return err
		}
	}
	if dec.postcopy {
		m.postcopy, m.res.PostCopy = true, true
		return q.Execute(ctx, "migrate-start-postcopy", nil, nil)
	}
	return nil
}

// planSwitchover tells QEMU the bandwidth to plan the switchover with
// (avail-switchover-bandwidth, QEMU 8.2 and later) when the converger's
// cautious figure moved by a tenth: QEMU then stops the guest only when
// the rest fits in the downtime limit at that rate, not at its last
// 100 ms. 0 leaves QEMU's own estimate.
func (m *outgoing) planSwitchover(ctx context.Context, bw int64) {
	if bw <= 0 || m.noSwitchoverBw || (m.switchoverBw > 0 && abs64(bw-m.switchoverBw)*10 < m.switchoverBw) {
		return
	}
	if err := m.p.qmp.Execute(ctx, "migrate-set-parameters", qmp.Args{"avail-switchover-bandwidth": bw}, nil); err != nil {
		m.noSwitchoverBw = true // an older QEMU: its own estimate
		m.d.log.Debug("qemu: no avail-switchover-bandwidth", "vm", m.v.rec.Config.ID, "err", err)
		return
	}
	m.switchoverBw = bw
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// switchover runs with the source paused: mirrors stop (in sync), the
// target resumes, and in post-copy the rest of memory is pulled.
func (m *outgoing) switchover(ctx context.Context, mi migInfo) error {
	pr := hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageSwitchover, Elapsed: m.d.clock.Now().Sub(m.start)}
	if mi.RAM != nil { // what went; nothing is left to send
		pr.Transferred, pr.Total = mi.RAM.Transferred, mi.RAM.Total
	}
	m.report(pr, true)
	m.stopped = m.stopEvent()
	if err := m.stopMirrors(ctx); err != nil {
		return err
	}
	m.doneSent = true
	mirrored := m.d.clock.Now()
	rep, err := m.ctl.call(ctlMsg{Op: "done"}, time.Minute)
	if err != nil {
		if strings.HasPrefix(err.Error(), "qemu: migration target:") {
			m.doneSent = false // the target refused and dropped its copy: ours is safe to resume
		}
		return err
	}
	if rep.Now != 0 {
		m.resumed = time.Unix(0, rep.Now)
	}
	m.d.log.Debug("qemu: switchover", "vm", m.v.rec.Config.ID, "stopToMirrorsDone", mirrored.Sub(m.stopped),
		"done", m.d.clock.Now().Sub(mirrored))
	m.res.Total = m.d.clock.Now().Sub(m.start)
	if m.postcopy {
		var err error
		if mi, err = m.finishPostCopy(ctx); err != nil {
			return err
		}
	}
	if mi.TotalTime == 0 { // "completed" is set a moment before the times
		mi = m.finalInfo(ctx, mi)
	}
	m.res.Downtime = time.Duration(mi.Downtime) * time.Millisecond
	if m.res.Downtime > m.opts.DowntimeLimit && !m.opts.NoEscalation {
		// QEMU planned within the cap and took longer: say so.
		m.res.Notes = append(m.res.Notes, fmt.Sprintf("over the cap: QEMU's downtime %v exceeded the %v limit", m.res.Downtime, m.opts.DowntimeLimit))
		m.d.log.Warn("qemu: migration downtime over the cap", "vm", m.v.rec.Config.ID, "downtime", m.res.Downtime, "cap", m.opts.DowntimeLimit)
	}
	if mi.RAM != nil {
		m.res.RAMBytes = mi.RAM.Transferred
	}
	m.res.Bytes = m.res.RAMBytes + m.res.DiskBytes
	return nil
}

// stopEvent returns when QEMU paused the guest for the switchover: the
// newest STOP event (it comes before the "completed" state), or zero when
// none came within a second.
func (m *outgoing) stopEvent() time.Time {
	var at time.Time
	timeout := time.After(time.Second)
	for {
		select {
		case ev, ok := <-m.stops.C:
			if !ok {
				return at
			}
			at = ev.Timestamp
			continue
		default:
		}
		if !at.IsZero() {
			return at
		}
		select {
		case ev, ok := <-m.stops.C:
			if !ok {
				return at
			}
			at = ev.Timestamp
		case <-timeout:
			return at
		}
	}
}

// finalInfo re-reads query-migrate (≤ 1 s) until QEMU has filled in the
// times of the completed migration: it sets the status first.
func (m *outgoing) finalInfo(ctx context.Context, mi migInfo) migInfo {
	for i := 0; i < 200 && mi.TotalTime == 0; i++ {
		time.Sleep(5 * time.Millisecond)
		var again migInfo
		if m.p.qmp.Execute(ctx, "query-migrate", nil, &again) != nil {
			break
		}
		mi = again
	}
	return mi
}

// prepare opens the control connection and sends "prepare" (msg carries
// the kind of migration); the target answers the disks it adopted from
// shared storage, which are not copied.
func (m *outgoing) prepare(ctx context.Context, msg ctlMsg) error {
	var err error
	if m.ctl, err = dialControl(ctx, m.a, m.tlsDir); err != nil {
		return err
	}
	msg.Op, msg.Key, msg.Disks = "prepare", m.a.key, activeLayers(m.v.rec)
	rep, err := m.ctl.call(msg, time.Minute)
	if err != nil {
		return err
	}
	if rep.Port > 0 {
		m.a.mig = rep.Port
	}
	if m.a.mig == 0 && !msg.Cold {
		return fmt.Errorf("qemu: the migration target named no port for the memory stream")
	}
	if !msg.Cold {
		// The target says the channels it set; one that does not (an
		// older driver) listens for a single stream.
		m.res.MultifdChannels = 1
		if msg.Multifd > 1 && rep.Multifd == msg.Multifd {
			m.res.MultifdChannels = msg.Multifd
		}
	}
	m.shared = rep.Disks
	for name := range m.shared {
		m.res.SharedDisks = append(m.res.SharedDisks, name)
	}
	return nil
}

// keepAlive pings the target when the control connection has been quiet
// for controlPing, so it does not give up on a long transfer.
func (m *outgoing) keepAlive() error {
	if time.Since(m.ctl.at) <= controlPing {
		return nil
	}
	_, err := m.ctl.call(ctlMsg{Op: "ping"}, time.Minute)
	return err
}

// report passes progress on, at most every 250ms unless forced.
func (m *outgoing) report(pr hypervisor.MigrationProgress, force bool) {
	if m.progress == nil {
		return
	}
	now := m.d.clock.Now()
	if !force && now.Sub(m.lastRep) < 250*time.Millisecond {
		return
	}
	m.lastRep = now
	if pr.Elapsed == 0 {
		pr.Elapsed = now.Sub(m.start)
	}
	m.progress(pr)
}

// abort puts the source back after a failure before the switchover and
// tells the target to drop its copy.
func (m *outgoing) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if m.ticks != nil {
		m.ticks.Stop()
	}
	p := m.p
	if m.unboost != nil {
		m.unboost()
	}
	if !p.hasExited() {
		q := p.qmp
		q.Execute(ctx, "migrate_cancel", nil, nil)
		for i := 0; i < 100; i++ { // until QEMU has left the active states
			var mi migInfo
			if q.Execute(ctx, "query-migrate", nil, &mi) != nil || !migrationBusy(mi.Status) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		m.stopMirrors(ctx)
		resetMigration(ctx, p)
		q.Execute(ctx, "migrate-set-parameters", qmp.Args{"max-cpu-throttle": throttleMax}, nil)
		if m.switchoverBw > 0 {
			q.Execute(ctx, "migrate-set-parameters", qmp.Args{"avail-switchover-bandwidth": 0}, nil)
		}
		if st, err := q.QueryStatus(ctx); err == nil && !st.Running && m.running {
			if err := q.Cont(ctx); err != nil {
				m.d.log.Warn("qemu: resuming the source after a failed migration", "vm", m.v.rec.Config.ID, "err", err)
			}
		}
	}
	if m.ctl != nil {
		m.ctl.call(ctlMsg{Op: "abort"}, 30*time.Second)
		m.ctl.close()
	}
}

// migrationBusy reports a query-migrate status of a migration still going.
func migrationBusy(status string) bool {
	switch status {
	case "setup", "active", "device", "pre-switchover", "cancelling", "wait-unplug":
		return true
	}
	return false
}
