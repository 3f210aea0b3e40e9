package qemu

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// Leftovers of an outgoing migration whose agent died. MigrateOut cleans
// up after itself (abort), but an agent killed mid-migration does not: the
// source QEMU keeps its disk mirrors (block jobs "mirror-vd<n>"), their
// NBD client nodes ("nbd-vd<n>", whose names the next migration needs:
// "Duplicate nodes with node-name='nbd-vd0'"), a migration that may still
// run, its capabilities and parameters, and the TLS client credentials.
// cleanLeftovers, run on every QEMU the driver adopts, removes them:
//
//   - a pre-copy migration still going is cancelled (the agent that would
//     have finished it is gone; QEMU resumes the guest if it ran);
//   - a migration that completed (the source paused at the switchover)
//     is left paused: the guest may run on the target, and only the
//     control plane can tell (as for ErrMigrationOutcome);
//   - a post-copy migration is left alone: the guest runs on the target;
//   - the VM's CPU weight goes back from a migration boost the agent did
//     not end (the VMs' group's went back when this driver started);
//   - then the mirrors are cancelled, the NBD client nodes deleted, the
//     capabilities and parameters reset and the credentials dropped.
//
// Each step is best effort and logged; ctx bounds the whole.
func (d *Driver) cleanLeftovers(ctx context.Context, v *vm, p *process) {
	id := v.rec.Config.ID
	q := p.qmp
	d.endLeftBoost(v)
	var mi migInfo
	if err := q.Execute(ctx, "query-migrate", nil, &mi); err != nil {
		d.log.Warn("qemu: re-attach: query-migrate", "vm", id, "err", err)
		return
	}
	switch {
	case strings.HasPrefix(mi.Status, "postcopy"):
		d.log.Warn("qemu: re-attach: a post-copy migration is under way; the guest runs on the target, leaving it to the operator",
			"vm", id, "status", mi.Status)
		return
	case migrationBusy(mi.Status):
		d.log.Warn("qemu: re-attach: cancelling the migration its agent left running", "vm", id, "status", mi.Status)
		q.Execute(ctx, "migrate_cancel", nil, nil)
		if !waitMigrationIdle(ctx, q) {
			d.log.Warn("qemu: re-attach: the migration did not end; its leftovers stay", "vm", id)
			return
		}
	case mi.Status == "completed":
		d.log.Warn("qemu: re-attach: a migration switched over before the agent died; the source stays paused until the control plane knows where the guest runs",
			"vm", id)
	}
	d.cancelMirrors(ctx, id, q)
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	if err := q.Execute(ctx, "query-named-block-nodes", qmp.Args{"flat": true}, &nodes); err == nil {
		for _, n := range nodes {
			if strings.HasPrefix(n.NodeName, "nbd-") {
				if err := q.BlockdevDel(ctx, n.NodeName); err != nil {
					d.log.Warn("qemu: re-attach: deleting a migration's NBD node", "vm", id, "node", n.NodeName, "err", err)
				} else {
					d.log.Info("qemu: re-attach: deleted a migration's NBD node", "vm", id, "node", n.NodeName)
				}
			}
		}
	}
	// Also before any migration began (status none): MigrateOut sets
	// them before it mirrors the disks. multifd left on would fail the
	// next memory snapshot (a file migration refuses it).
	caps := []qmp.Args{{"capability": "auto-converge", "state": false}, {"capability": "postcopy-ram", "state": false},
		{"capability": "multifd", "state": false}}
	q.Execute(ctx, "migrate-set-capabilities", qmp.Args{"capabilities": caps}, nil)
	q.Execute(ctx, "migrate-set-parameters", qmp.Args{"tls-creds": "", "tls-hostname": "", "max-cpu-throttle": throttleMax}, nil)
	q.ObjectDel(ctx, tlsClientObj) // absent: an error, ignored
}

// cancelMirrors cancels a migration's disk mirrors (force: the source's
// data stands, the target's copy is dropped) and waits until they end.
func (d *Driver) cancelMirrors(ctx context.Context, id string, q *qmp.Conn) {
	jobs, err := q.QueryBlockJobs(ctx)
	if err != nil {
		return
	}
	n := 0
	for _, j := range jobs {
		if strings.HasPrefix(j.Device, "mirror-") {
			d.log.Warn("qemu: re-attach: cancelling a migration's disk mirror", "vm", id, "job", j.Device)
			q.Execute(ctx, "block-job-cancel", qmp.Args{"device": j.Device, "force": true}, nil)
			n++
		}
	}
	for n > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		if jobs, err = q.QueryBlockJobs(ctx); err != nil {
			return
		}
		n = 0
		for _, j := range jobs {
			if strings.HasPrefix(j.Device, "mirror-") {
				n++
			}
		}
	}
}

// waitMigrationIdle polls query-migrate until the migration has left the
// active states; false when ctx ends first.
func waitMigrationIdle(ctx context.Context, q *qmp.Conn) bool {
	for {
		var mi migInfo
		if err := q.Execute(ctx, "query-migrate", nil, &mi); err != nil {
			return false
		}
		if !migrationBusy(mi.Status) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// endLeftBoost writes the VM's own CPU weight back to its group: a
// migration boost (migrate_boost.go) outlives an agent killed during
// the migration.
func (d *Driver) endLeftBoost(v *vm) {
	if d.cg == nil || !d.cg.cpuC {
		return
	}
	shares := v.rec.Config.Spec.Controls.CPUShares
	if shares == 0 {
		shares = model.DefaultCPUShares
	}
	if err := d.cg.writeShares(filepath.Join(d.cg.cpu, v.rec.Config.ID), shares); err != nil {
		d.log.Debug("qemu: re-attach: the VM's CPU weight", "vm", v.rec.Config.ID, "err", err)
	}
}
