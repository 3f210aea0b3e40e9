package qemu

import (
	"context"
	"errors"
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
// is not recovered (the control connection is not redialled). Recovery
// needs the target's monitor while its guest may hold QEMU's big lock
// waiting for a page: migrate-recover goes out of band (recoverIncoming),
// and vpool stops its own main-loop reads of guest memory (balloon
// statistics) for the post-copy.

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
// listens for the resumed stream and returns the port.
//
// A guest waiting for a missing page can hold QEMU's big lock (under TCG a
// device access from the vCPU thread faults on the page), and then every
// in-band command waits with it: seen as query-migrate timing out. So
// migrate-recover goes out of band, which QEMU runs in its monitor thread,
// on a port the driver picks (bound and released: a port taken meanwhile
// fails the attempt, and the next picks another). Without out-of-band
// execution it uses the in-band commands, and QEMU binds the port.
func (d *Driver) recoverIncoming(in *incoming) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := in.p
	var lastErr error
	for i := 0; i < 100; i++ { // the target may notice the break a moment after the source
		port, err := pickPort(in.a.host)
		if err != nil {
			return 0, err
		}
		uri := "tcp:" + net.JoinHostPort(in.a.host, strconv.Itoa(port))
		err = p.qmp.ExecuteOOB(ctx, "migrate-recover", qmp.Args{"uri": uri}, nil)
		switch {
		case err == nil:
			return port, nil
		case errors.Is(err, qmp.ErrNoOOB):
			return d.recoverInBand(ctx, in)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("qemu: migrate-recover: %w (last: %w)", ctx.Err(), lastErr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, lastErr
}

// pickPort returns a port free on host a moment ago.
func pickPort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("qemu: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// recoverInBand is recoverIncoming without out-of-band execution.
func (d *Driver) recoverInBand(ctx context.Context, in *incoming) (int, error) {
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
			in.p.qmp.Execute(ctx, "qom-set", qmp.Args{"path": balloonPath, "property": "guest-stats-polling-interval", "value": 2}, nil)
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
