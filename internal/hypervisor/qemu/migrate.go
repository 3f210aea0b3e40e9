package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// Live migration with local disks (see docs/qemu.md):
//
//	target  MigrateIn: create the VM's disks (same image base), start QEMU
//	        with -incoming defer, export its disks over NBD, listen for
//	        the migration stream and for a control connection; return
//	        "qemu://host?mig=P&nbd=P&ctl=P".
//	source  MigrateOut: mirror each disk's top layer into the target's
//	        NBD export (blockdev-mirror sync=top) until ready, migrate RAM
//	        and devices (tcp), then cancel the mirrors (in sync: the
//	        source is paused), and tell the target "done" over the
//	        control connection.
//	target  on "done": stop the NBD server, resume the guest, answer "ok";
//	        the source then quits and removes its copy. On any failure the
//	        source resumes its guest and the target deletes its copy.
//
// VMs with snapshots or hot-plugged vCPUs/DIMMs are refused for now
// (their layer chain / device set would not match on the target).

const (
	migrateHost     = "127.0.0.1"
	incomingTimeout = 10 * time.Minute
)

// MigrateIn prepares this host to receive cfg and returns the address the
// source must send to.
func (d *Driver) MigrateIn(ctx context.Context, cfg hypervisor.VMConfig) (string, error) {
	if err := d.Create(ctx, cfg); err != nil {
		return "", err
	}
	v, err := d.lock(cfg.ID)
	if err != nil {
		return "", err
	}
	defer v.mu.Unlock()
	rev := &reverter{}
	defer rev.fail()
	rev.add(func() { d.deleteLocked(context.Background(), v) })
	migPort, err := freePort()
	if err != nil {
		return "", err
	}
	if err := d.startLocked(ctx, v, startOpts{incoming: "defer"}); err != nil {
		return "", err
	}
	p := v.proc
	nbdPort, err := freePort()
	if err != nil {
		return "", err
	}
	if err := p.qmp.Execute(ctx, "nbd-server-start", qmp.Args{"addr": qmp.Args{"type": "inet",
		"data": qmp.Args{"host": migrateHost, "port": strconv.Itoa(nbdPort)}}}, nil); err != nil {
		return "", fmt.Errorf("qemu: migrate in %s: %w", cfg.ID, err)
	}
	for _, dr := range v.rec.Disks {
		if err := p.qmp.Execute(ctx, "block-export-add", qmp.Args{"type": "nbd", "id": "exp-" + dr.deviceID(),
			"node-name": dr.node(dr.Active), "name": dr.deviceID(), "writable": true}, nil); err != nil {
			return "", fmt.Errorf("qemu: migrate in %s: %w", cfg.ID, err)
		}
	}
	if err := p.qmp.Execute(ctx, "migrate-incoming", qmp.Args{"uri": fmt.Sprintf("tcp:%s:%d", migrateHost, migPort)}, nil); err != nil {
		return "", fmt.Errorf("qemu: migrate in %s: %w", cfg.ID, err)
	}
	ln, err := net.Listen("tcp", migrateHost+":0")
	if err != nil {
		return "", fmt.Errorf("qemu: migrate in %s: %w", cfg.ID, err)
	}
	ctl := ln.Addr().(*net.TCPAddr).Port
	go d.awaitIncoming(v, p, ln)
	rev.success()
	return fmt.Sprintf("qemu://%s?mig=%d&nbd=%d&ctl=%d", migrateHost, migPort, nbdPort, ctl), nil
}

// awaitIncoming finishes (on "done") or abandons (on "abort", a timeout,
// or QEMU's exit) an incoming migration.
func (d *Driver) awaitIncoming(v *vm, p *process, ln net.Listener) {
	defer ln.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(incomingTimeout))
	abandon := func(why string) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.proc == p && !v.deleted {
			d.log.Warn("qemu: incoming migration abandoned", "vm", v.rec.Config.ID, "why", why)
			d.deleteLocked(context.Background(), v)
		}
	}
	conn, err := ln.Accept()
	if err != nil {
		abandon(err.Error())
		return
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(incomingTimeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "done" {
		abandon(fmt.Sprintf("control said %q (%v)", strings.TrimSpace(line), err))
		fmt.Fprintf(conn, "ok\n")
		return
	}
	if err := d.finishIncoming(v, p); err != nil {
		abandon(err.Error())
		fmt.Fprintf(conn, "error: %v\n", err)
		return
	}
	fmt.Fprintf(conn, "ok\n")
}

func (d *Driver) finishIncoming(v *vm, p *process) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.proc != p || v.deleted {
		return errors.New("the incoming VM is gone")
	}
	if err := waitIncoming(ctx, p); err != nil {
		return err
	}
	if err := p.qmp.Execute(ctx, "nbd-server-stop", nil, nil); err != nil {
		return err
	}
	return p.qmp.Cont(ctx)
}

type migAddr struct {
	host           string
	mig, nbd, ctrl int
}

func parseMigAddr(s string) (migAddr, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "qemu" {
		return migAddr{}, fmt.Errorf("qemu: bad migration address %q (want qemu://host?mig=&nbd=&ctl=)", s)
	}
	a := migAddr{host: u.Host}
	for k, p := range map[string]*int{"mig": &a.mig, "nbd": &a.nbd, "ctl": &a.ctrl} {
		if *p, err = strconv.Atoi(u.Query().Get(k)); err != nil || *p <= 0 {
			return migAddr{}, fmt.Errorf("qemu: bad migration address %q: %s", s, k)
		}
	}
	return a, nil
}

// MigrateOut live-migrates the VM (disks included) to addr from MigrateIn
// on another driver; on success the VM is gone here.
func (d *Driver) MigrateOut(ctx context.Context, id, addr string, opts hypervisor.MigrateOptions, progress func(hypervisor.MigrationProgress)) (hypervisor.MigrationResult, error) {
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
	case p == nil:
		return hypervisor.MigrationResult{}, fmt.Errorf("qemu: migrate %s: not running: %w", id, hypervisor.ErrBadState)
	case len(v.rec.Snapshots) > 0:
		return hypervisor.MigrationResult{}, fmt.Errorf("qemu: migrate %s: delete its snapshots first: %w", id, hypervisor.ErrBadState)
	case len(v.rec.Run.HotCPUs) > 0 || len(v.rec.Run.DIMMs) > 0:
		return hypervisor.MigrationResult{}, fmt.Errorf("qemu: migrate %s: restart it after the live resize first: %w", id, hypervisor.ErrBadState)
	}
	res, err := d.migrate(ctx, v, p, a, opts, progress)
	if err != nil {
		d.abortMigration(v, p, a)
		return res, fmt.Errorf("qemu: migrate %s: %w", id, err)
	}
	// The target runs the guest now: retire our copy.
	p.setEnding()
	p.qmp.Quit(ctx)
	if p.wait(ctx, 10*time.Second) != nil {
		p.kill(ctx)
	}
	d.reapLocked(v, p)
	if err := d.deleteLocked(ctx, v); err != nil {
		return res, err
	}
	return res, nil
}

func (d *Driver) migrate(ctx context.Context, v *vm, p *process, a migAddr, opts hypervisor.MigrateOptions, progress func(hypervisor.MigrationProgress)) (hypervisor.MigrationResult, error) {
	var res hypervisor.MigrationResult
	if err := d.mirrorDisks(ctx, v, p, a); err != nil {
		return res, err
	}
	params := qmp.Args{}
	if opts.DowntimeLimit > 0 {
		params["downtime-limit"] = opts.DowntimeLimit.Milliseconds()
	}
	if opts.BandwidthBps > 0 {
		params["max-bandwidth"] = opts.BandwidthBps
	}
	if len(params) > 0 {
		if err := p.qmp.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
			return res, err
		}
	}
	if err := p.qmp.Execute(ctx, "migrate", qmp.Args{"uri": fmt.Sprintf("tcp:%s:%d", a.host, a.mig)}, nil); err != nil {
		return res, err
	}
	mi, err := waitMigration(ctx, p, func(mi qmp.MigrationInfo) {
		if progress != nil && mi.RAM != nil {
			progress(hypervisor.MigrationProgress{Transferred: mi.RAM.Transferred, Remaining: mi.RAM.Remaining, Total: mi.RAM.Total,
				DirtyRate: mi.RAM.DirtyRate * max(mi.RAM.PageSize, 4096), ExpectedDowntime: time.Duration(mi.ExpectedDowntime) * time.Millisecond})
		}
	})
	if err != nil {
		return res, err
	}
	res.Total = time.Duration(mi.TotalTime) * time.Millisecond
	res.Downtime = time.Duration(mi.Downtime) * time.Millisecond
	if mi.RAM != nil {
		res.Bytes = mi.RAM.Transferred
	}
	// The source is paused: the mirrors are in sync and can stop.
	if err := d.stopMirrors(ctx, v, p); err != nil {
		return res, err
	}
	return res, control(ctx, a, "done")
}

// mirrorDisks starts one mirror per disk into the target's NBD exports
// and waits until all are ready (in sync, then mirroring every write).
func (d *Driver) mirrorDisks(ctx context.Context, v *vm, p *process, a migAddr) error {
	sub := p.qmp.Subscribe("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_ERROR")
	defer sub.Close()
	waiting := map[string]bool{}
	for _, dr := range v.rec.Disks {
		nbd := "nbd-" + dr.deviceID()
		if err := p.qmp.BlockdevAdd(ctx, qmp.Args{"driver": "nbd", "node-name": nbd, "export": dr.deviceID(),
			"server": qmp.Args{"type": "inet", "host": a.host, "port": strconv.Itoa(a.nbd)}}); err != nil {
			return err
		}
		job := "mirror-" + dr.deviceID()
		if err := p.qmp.Execute(ctx, "blockdev-mirror", qmp.Args{"job-id": job, "device": dr.node(dr.Active),
			"target": nbd, "sync": "top"}, nil); err != nil {
			return err
		}
		waiting[job] = true
	}
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
		if !waiting[data.Device] {
			continue
		}
		if ev.Name != "BLOCK_JOB_READY" {
			return fmt.Errorf("qemu: disk mirror %s: %s %s", data.Device, ev.Name, data.Error)
		}
		delete(waiting, data.Device)
	}
	return nil
}

// stopMirrors cancels the (ready) mirrors, which leaves the targets in
// sync, and drops the NBD client nodes.
func (d *Driver) stopMirrors(ctx context.Context, v *vm, p *process) error {
	sub := p.qmp.Subscribe("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")
	defer sub.Close()
	jobs, err := p.qmp.QueryBlockJobs(ctx)
	if err != nil {
		return err
	}
	waiting := map[string]bool{}
	for _, j := range jobs {
		if strings.HasPrefix(j.Device, "mirror-") {
			if err := p.qmp.Execute(ctx, "block-job-cancel", qmp.Args{"device": j.Device}, nil); err != nil {
				return err
			}
			waiting[j.Device] = true
		}
	}
	for len(waiting) > 0 {
		ev, err := sub.Wait(ctx, nil)
		if err != nil {
			return err
		}
		var data struct {
			Device string `json:"device"`
		}
		ev.DecodeData(&data)
		delete(waiting, data.Device)
	}
	for _, dr := range v.rec.Disks {
		p.qmp.BlockdevDel(ctx, "nbd-"+dr.deviceID())
	}
	return nil
}

// abortMigration puts the source back as it was and tells the target to
// drop its copy.
func (d *Driver) abortMigration(v *vm, p *process, a migAddr) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if p.hasExited() {
		control(ctx, a, "abort")
		return
	}
	p.qmp.Execute(ctx, "migrate_cancel", nil, nil)
	d.stopMirrors(ctx, v, p)
	if st, err := p.qmp.QueryStatus(ctx); err == nil && (st.Status == "postmigrate" || st.Status == "finish-migrate") {
		p.qmp.Cont(ctx)
	}
	control(ctx, a, "abort")
}

// control sends one command on the target's control port and waits for
// its answer.
func control(ctx context.Context, a migAddr, cmd string) error {
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(a.host, strconv.Itoa(a.ctrl)))
	if err != nil {
		return fmt.Errorf("qemu: migration control: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	if _, err := fmt.Fprintf(conn, "%s\n", cmd); err != nil {
		return fmt.Errorf("qemu: migration control: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("qemu: migration control: %w", err)
	}
	if line = strings.TrimSpace(line); line != "ok" {
		return fmt.Errorf("qemu: migration target: %s", line)
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", migrateHost+":0")
	if err != nil {
		return 0, fmt.Errorf("qemu: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
