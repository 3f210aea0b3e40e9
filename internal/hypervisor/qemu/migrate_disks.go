package qemu

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// Local disks follow the VM through a mirror: one blockdev-mirror of each
// disk's active layer (sync=top: the image base exists on both hosts) into
// the target's NBD export, TLS-protected when the migration is. A mirror
// is ready once in sync; from then on it copies every guest write, and it
// is cancelled (which flushes it, leaving the target in sync) once the
// source is paused at the switchover.

// mirrorDisks starts the mirrors and waits until all are ready, reporting
// their progress and keeping the control connection alive meanwhile. A
// cold migration caps the mirrors at BandwidthBps (speed).
func (m *outgoing) mirrorDisks(ctx context.Context) error {
	q := m.p.qmp
	sub := q.Subscribe("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_ERROR")
	defer sub.Close()
	waiting := map[string]bool{}
	for _, dr := range m.v.rec.Disks {
		if _, ok := m.shared[dr.Name]; ok {
			continue
		}
		m.mirrored = true
		nbd := "nbd-" + dr.deviceID()
		node := qmp.Args{"driver": "nbd", "node-name": nbd, "export": dr.deviceID(),
			"server": qmp.Args{"type": "inet", "host": m.a.host, "port": strconv.Itoa(m.a.nbd)}}
		if m.res.TLS {
			node["tls-creds"], node["tls-hostname"] = tlsClientObj, m.a.tlsName
		}
		if err := q.BlockdevAdd(ctx, node); err != nil {
			return fmt.Errorf("qemu: disk %s: NBD to the target: %w", dr.Name, err)
		}
		job := "mirror-" + dr.deviceID()
		args := qmp.Args{"job-id": job, "device": dr.node(dr.Active), "target": nbd, "sync": "top"}
		if m.res.Cold && m.opts.BandwidthBps > 0 {
			args["speed"] = m.opts.BandwidthBps
		}
		if err := q.Execute(ctx, "blockdev-mirror", args, nil); err != nil {
			return err
		}
		waiting[job] = true
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for len(waiting) > 0 {
		var ev qmp.Event
		select {
		case e, ok := <-sub.C:
			if !ok {
				return fmt.Errorf("qemu: disk mirrors: %w", qmp.ErrClosed)
			}
			ev = e
		case <-ctx.Done():
			return fmt.Errorf("qemu: disk mirrors: %w", ctx.Err())
		case <-tick.C:
			m.reportDisks(ctx, false)
			if err := m.keepAlive(); err != nil {
				return err
			}
			continue
		}
		var data struct {
			Device    string `json:"device"`
			Error     string `json:"error"`
			Operation string `json:"operation"` // BLOCK_JOB_ERROR: read or write
		}
		ev.DecodeData(&data)
		if !waiting[data.Device] {
			continue
		}
		if ev.Name != "BLOCK_JOB_READY" {
			return fmt.Errorf("qemu: disk mirror %s: %s %s%s", data.Device, ev.Name, data.Operation, data.Error)
		}
		delete(waiting, data.Device)
		m.reportDisks(ctx, len(waiting) == 0)
	}
	return nil
}

// reportDisks reports the mirrors' progress.
func (m *outgoing) reportDisks(ctx context.Context, force bool) {
	jobs, err := m.p.qmp.QueryBlockJobs(ctx)
	if err != nil {
		return
	}
	var done, total int64
	for _, j := range jobs {
		if strings.HasPrefix(j.Device, "mirror-") {
			done, total = done+j.Offset, total+j.Len
		}
	}
	m.report(hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageDisks, DiskTransferred: done, DiskTotal: total}, force)
}

// stopMirrors cancels the mirrors (ready ones complete without a pivot,
// leaving the target in sync), counts what they copied, and drops the NBD
// client nodes.
func (m *outgoing) stopMirrors(ctx context.Context) error {
	if !m.mirrored {
		return nil
	}
	q := m.p.qmp
	// The NBD client nodes go whatever happens: one left behind would
	// make the next migration of this VM fail (duplicate node name).
	defer func() {
		for _, dr := range m.v.rec.Disks {
			if _, ok := m.shared[dr.Name]; !ok {
				q.BlockdevDel(ctx, "nbd-"+dr.deviceID())
			}
		}
		m.mirrored = false
	}()
	sub := q.Subscribe("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")
	defer sub.Close()
	jobs, err := q.QueryBlockJobs(ctx)
	if err != nil {
		return err
	}
	waiting := map[string]bool{}
	for _, j := range jobs {
		if !strings.HasPrefix(j.Device, "mirror-") {
			continue
		}
		m.res.DiskBytes += j.Offset
		if err := q.Execute(ctx, "block-job-cancel", qmp.Args{"device": j.Device}, nil); err != nil {
			return err
		}
		waiting[j.Device] = true
	}
	// A mirror whose target died ends with an error; the others are still
	// waited for, so that every node is free to delete.
	var first error
	for len(waiting) > 0 {
		ev, err := sub.Wait(ctx, nil)
		if err != nil {
			return err
		}
		var data struct {
			Device string `json:"device"`
			Error  string `json:"error"`
		}
		ev.DecodeData(&data)
		if waiting[data.Device] && data.Error != "" && first == nil {
			first = fmt.Errorf("qemu: disk mirror %s: %s", data.Device, data.Error)
		}
		delete(waiting, data.Device)
	}
	return first
}
