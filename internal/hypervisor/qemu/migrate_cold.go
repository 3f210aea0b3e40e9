package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
)

// Cold migration: MigrateOut of a VM that is not running (stopped or
// crashed) moves its disks and nothing else, through the same target
// (MigrateIn: a QEMU -incoming defer exporting the new disks over NBD) and
// the same control connection as a live migration:
//
//	source  "prepare" {cold} → the target does not listen for a memory
//	        stream; it replies the disks it adopted from shared storage.
//	        If any disk is local, a helper QEMU of the VM starts paused
//	        (-S, never continued: the guest never runs) and mirrors each
//	        local disk into the target's export (TLS like live, capped at
//	        BandwidthBps), until in sync; the mirrors are cancelled
//	        (target in sync) and the helper quits.
//	        "done" → the target stops NBD, takes the shared disks, quits
//	        its QEMU (closing its disks flushes them) and lists the VM
//	        stopped.
//	source  deletes its copy (shared disks now belong to the target).
//
// Any failure before "done" quits the helper (the VM stays stopped or
// crashed, as it was) and tells the target to "abort" (it deletes its
// copy). "done" without an answer: the VM may now be the target's; the
// source keeps its copy, stopped, and returns ErrMigrationOutcome.

// helperSerialLog is the helper QEMU's serial log (the guest never runs,
// so it stays empty); the VM's own serial logs are left alone.
const helperSerialLog = "serial-helper.log"

// runCold is MigrateOut for a VM without a QEMU; m.p is nil on entry.
func (m *outgoing) runCold(ctx context.Context) (hypervisor.MigrationResult, error) {
	d, v := m.d, m.v
	id := v.rec.Config.ID
	m.res.Cold, m.res.Stage = true, hypervisor.MigrationStageDisks
	if err := m.copyCold(ctx); err != nil {
		m.quitHelper()
		if m.doneSent {
			m.ctl.close()
			d.log.Error("qemu: cold migration handover unanswered; source copy kept stopped", "vm", id, "err", err)
			return m.res, fmt.Errorf("qemu: migrate %s: %w: %w", id, ErrMigrationOutcome, err)
		}
		if m.ctl != nil {
			m.ctl.call(ctlMsg{Op: "abort"}, 30*time.Second)
			m.ctl.close()
		}
		return m.res, fmt.Errorf("qemu: migrate %s: %w", id, err)
	}
	m.ctl.close()
	if err := d.deleteLocked(ctx, v); err != nil {
		d.log.Warn("qemu: deleting the migrated-away copy", "vm", id, "err", err)
	}
	d.log.Info("qemu: migrated cold", "vm", id, "total", m.res.Total, "bytes", m.res.Bytes,
		"shared", len(m.res.SharedDisks), "tls", m.res.TLS)
	return m.res, nil
}

// copyCold runs the cold migration up to the target's answer to "done".
func (m *outgoing) copyCold(ctx context.Context) error {
	if err := m.prepare(ctx, ctlMsg{Cold: true}); err != nil {
		return err
	}
	m.report(hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageDisks}, true)
	if len(m.v.rec.Disks) > len(m.shared) {
		if err := m.d.startLocked(ctx, m.v, startOpts{helper: true}); err != nil {
			return err
		}
		m.p = m.v.proc
		if m.res.TLS {
			if err := m.d.addTLS(ctx, m.p.qmp, m.v.rec, m.tlsDir, false); err != nil {
				return err
			}
		}
		if err := m.mirrorDisks(ctx); err != nil {
			return err
		}
		if err := m.stopMirrors(ctx); err != nil {
			return err
		}
		// The mirrors are done: the helper has nothing left to do, and
		// the target must not see its disks written once it has them.
		if err := m.quitHelper(); err != nil {
			return err
		}
	}
	m.res.Bytes = m.res.DiskBytes
	m.doneSent = true
	if _, err := m.ctl.call(ctlMsg{Op: "done"}, time.Minute); err != nil {
		if strings.HasPrefix(err.Error(), "qemu: migration target:") {
			m.doneSent = false // the target refused and dropped its copy
		}
		return err
	}
	m.res.Total = m.d.clock.Now().Sub(m.start)
	m.report(hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageDisks,
		DiskTransferred: m.res.DiskBytes, DiskTotal: m.res.DiskBytes}, true)
	return nil
}

// activeLayers maps each disk to the file of its active layer.
func activeLayers(rec *record) map[string]string {
	active := map[string]string{}
	for _, dr := range rec.Disks {
		for _, l := range dr.Layers {
			if l.ID == dr.Active {
				active[dr.Name] = l.File
			}
		}
	}
	return active
}

// quitHelper ends the helper QEMU, if one runs; the VM is left as it was
// (stopped or crashed: reapLocked keeps LastExit for a helper). It fails
// when QEMU had to be killed or did not exit cleanly.
func (m *outgoing) quitHelper() error {
	p := m.p
	if p == nil {
		return nil
	}
	m.p = nil
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := p.quit(ctx, 10*time.Second)
	m.d.reapLocked(m.v, p)
	os.Remove(filepath.Join(m.d.vmDir(m.v.rec.Config.ID), helperSerialLog))
	if err != nil {
		return fmt.Errorf("qemu: ending the cold migration's helper: %w", err)
	}
	return nil
}

// finishColdIncoming is the target's "done" of a cold migration (v.mu
// held): the disks are in sync; the NBD server stops, the adopted disks
// become ours, and QEMU quits, which flushes the disks (the guest never
// ran). The VM is then listed stopped.
func (d *Driver) finishColdIncoming(ctx context.Context, in *incoming) error {
	v, p := in.v, in.p
	restore, err := d.handOver(ctx, in)
	if err != nil {
		return err
	}
	if err := p.quit(ctx, 30*time.Second); err != nil {
		restore()
		return fmt.Errorf("qemu: quitting after a cold migration: %w", err)
	}
	p.mu.Lock()
	exitErr := p.exitErr
	p.mu.Unlock()
	d.reapLocked(v, p)
	if exitErr != nil { // its disks may not be flushed
		restore()
		return fmt.Errorf("qemu: QEMU exited badly after a cold migration: %w", exitErr)
	}
	d.arrived(v)
	d.log.Info("qemu: cold migration arrived", "vm", v.rec.Config.ID, "shared", len(in.shared))
	return nil
}
