package qemu

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// Post-copy, and its recovery. After the switch to post-copy the guest
// runs on the target and pulls the pages it still lacks from the
// source: neither side holds the whole guest, so a broken stream must
// not end the migration. QEMU then pauses it on both ends
// (postcopy-paused; the guest's vCPUs wait for their pages), and the
// driver recovers it: the target listens again (migrate-recover, on a
// port QEMU binds and names), told over the control connection, and the
// source resumes the stream there (migrate resume=true). It tries
// recoverAttempts times within recoverWindow; the guest is lost only
// when that fails. A stream broken with the control connection down too
// is not recovered (the control connection is not redialled).

const (
	recoverAttempts = 5
	recoverWindow   = 2 * time.Minute
)

// finishPostCopy waits until the target has pulled all memory,
// recovering a broken stream.
func (m *outgoing) finishPostCopy(ctx context.Context) (migInfo, error) {
	for {
		var mi migInfo
		if err := m.p.qmp.Execute(ctx, "query-migrate", nil, &mi); err != nil {
			return mi, err
		}
		switch mi.Status {
		case "completed":
			m.res.Total = m.d.clock.Now().Sub(m.start)
			return mi, nil
		case "failed", "cancelled":
			return mi, fmt.Errorf("qemu: post-copy %s: %s (the guest is lost)", mi.Status, mi.ErrorDesc)
		case "postcopy-paused":
			if err := m.recoverPostCopy(ctx); err != nil {
				return mi, err
			}
		}
		m.report(progressOf(mi, sampleOf(mi, m.d.clock.Now().Sub(m.start)), hypervisor.MigrationStagePostCopy, ""), false)
		select {
		case <-ctx.Done():
			return mi, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// recoverPostCopy resumes a paused post-copy stream: the target listens
// again and the source sends there, a few times if need be.
func (m *outgoing) recoverPostCopy(ctx context.Context) error {
	id := m.v.rec.Config.ID
	deadline := m.d.clock.Now().Add(recoverWindow)
	var last error
	for attempt := 1; attempt <= recoverAttempts && m.d.clock.Now().Before(deadline); attempt++ {
		m.d.log.Warn("qemu: post-copy stream broke; recovering", "vm", id, "attempt", attempt)
		if last = m.resumeStream(ctx); last == nil {
			m.res.Notes = append(m.res.Notes, fmt.Sprintf("postcopy: the stream broke and was recovered (attempt %d)", attempt))
			return nil
		}
		m.d.log.Warn("qemu: post-copy recovery failed", "vm", id, "attempt", attempt, "err", last)
		select {
		case <-ctx.Done():
			return fmt.Errorf("qemu: post-copy recovery: %w (the guest is lost)", ctx.Err())
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	return fmt.Errorf("qemu: post-copy stream broke and could not be recovered: %w (the guest is lost)", last)
}

// resumeStream is one recovery attempt; it returns once the source has
// left postcopy-paused for good (or failed to).
func (m *outgoing) resumeStream(ctx context.Context) error {
	rep, err := m.ctl.call(ctlMsg{Op: "recover"}, time.Minute)
	if err != nil {
		return err
	}
	if rep.Port == 0 {
		return fmt.Errorf("qemu: the target named no port to recover on")
	}
	uri := "tcp:" + net.JoinHostPort(m.a.host, strconv.Itoa(rep.Port))
	if err := m.p.qmp.Execute(ctx, "migrate", qmp.Args{"uri": uri, "resume": true}, nil); err != nil {
		return err
	}
	for i := 0; i < 600; i++ { // ≤ 30 s for the handshake
		var mi migInfo
		if err := m.p.qmp.Execute(ctx, "query-migrate", nil, &mi); err != nil {
			return err
		}
		switch mi.Status {
		case "postcopy-active", "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("qemu: post-copy %s while recovering: %s", mi.Status, mi.ErrorDesc)
		}
		if i > 20 && mi.Status == "postcopy-paused" {
			return fmt.Errorf("qemu: the resumed stream broke again")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("qemu: post-copy recovery did not finish within 30s")
}

// recoverIncoming is the target's part: when its post-copy is paused, it
// listens for the resumed stream on a port QEMU binds and returns it.
func (d *Driver) recoverIncoming(in *incoming) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := in.p
	for i := 0; ; i++ { // the target may notice the break a moment after the source
		var mi migInfo
		if err := p.qmp.Execute(ctx, "query-migrate", nil, &mi); err != nil {
			return 0, err
		}
		if mi.Status == "postcopy-paused" {
			break
		}
		if i >= 100 {
			return 0, fmt.Errorf("qemu: the incoming migration is %s, not paused", mi.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
	uri := "tcp:" + net.JoinHostPort(in.a.host, "0")
	if err := p.qmp.Execute(ctx, "migrate-recover", qmp.Args{"uri": uri}, nil); err != nil {
		return 0, err
	}
	return incomingPort(ctx, p)
}

// resetWhenDone clears the migration's settings on the target once a
// post-copy migration has pulled all memory (resetMigration would break
// it earlier: recovery needs the TLS credentials).
func (d *Driver) resetWhenDone(in *incoming) {
	id := in.v.rec.Config.ID
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var mi migInfo
		err := in.p.qmp.Execute(ctx, "query-migrate", nil, &mi)
		if err == nil && (mi.Status == "completed" || mi.Status == "failed" || mi.Status == "cancelled") {
			if err := resetMigration(ctx, in.p); err != nil {
				d.log.Warn("qemu: clearing the incoming migration's settings", "vm", id, "err", err)
			}
			cancel()
			return
		}
		cancel()
		select {
		case <-in.p.exited:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
