package qemu

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// The target side of a live migration (see migrate.go for the whole).

// incoming is one arriving VM, served by serveIncoming.
type incoming struct {
	v        *vm
	p        *process
	srv      *ctlServer
	a        migAddr
	tls      bool
	tlsDir   string
	shared   map[string]string // adopted disks: name → file
	ticks    *tickWatcher      // started at the resume
	cold     bool              // the source said so in "prepare": no memory stream
	postcopy bool              // ... may switch to post-copy
	arrived  bool              // "done" succeeded: the VM is ours
	resumed  time.Time         // QEMU's RESUME event at the switchover
	unboost  func()            // ends the switchover boost (migrate_boost.go)
}

func (d *Driver) migrationHost() string {
	if d.cfg.MigrationHost != "" {
		return d.cfg.MigrationHost
	}
	return "127.0.0.1"
}

// MigrateIn prepares this host to receive cfg: it creates the VM's disks
// (adopting those already on shared storage), starts QEMU waiting for the
// stream (-incoming defer, paused), exports the local disks over NBD (TLS
// when configured) and listens for the source's control connection. It
// returns the address to give MigrateOut on the source.
//
// Clean-up: the target deletes the VM itself when the migration fails
// (abort, the source going away, QEMU exiting, no source within 10
// minutes); Delete(id) does the same at any time before the switchover and
// is what the orchestration calls on the target after a failed
// MigrateOut. A driver started on a state dir with a VM that never
// finished arriving deletes it.
func (d *Driver) MigrateIn(ctx context.Context, cfg hypervisor.VMConfig) (addr string, err error) {
	defer d.public(&err, "migrate in", cfg.ID)
	shared, err := d.createIncoming(ctx, cfg)
	if err != nil {
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
	v.arriving.Store(true)
	if err := os.WriteFile(filepath.Join(d.vmDir(cfg.ID), incomingMarker), nil, 0o600); err != nil {
		return "", fmt.Errorf("qemu: migrate in %s: %w", cfg.ID, err)
	}
	tlsDir := d.migrationTLSDir()
	in := &incoming{v: v, shared: shared, tls: tlsDir != "", tlsDir: tlsDir}
	in.a = migAddr{host: d.migrationHost(), key: newKey(), machine: d.machineType}
	if in.tls {
		if in.a.tlsName, err = tlsServerName(tlsDir); err != nil {
			return "", err
		}
	}
	if err := d.startLocked(ctx, v, startOpts{incoming: "defer"}); err != nil {
		return "", err
	}
	in.p = v.proc
	if err := d.exportDisks(ctx, in); err != nil {
		return "", fmt.Errorf("qemu: migrate in %s: %w", cfg.ID, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(in.a.host, "0"))
	if err != nil {
		return "", fmt.Errorf("qemu: migrate in %s: %w", cfg.ID, err)
	}
	in.srv = &ctlServer{ln: ln.(*net.TCPListener)}
	if in.tls {
		if in.srv.tlsCfg, err = controlServerTLS(tlsDir); err != nil {
			ln.Close()
			return "", err
		}
	}
	in.a.ctrl = ln.Addr().(*net.TCPAddr).Port
	go d.serveIncoming(in)
	rev.success()
	d.log.Info("qemu: waiting for incoming migration", "vm", cfg.ID, "tls", in.tls, "shared", len(shared))
	return in.a.String(), nil
}

// exportDisks starts the NBD server and exports every disk to mirror.
func (d *Driver) exportDisks(ctx context.Context, in *incoming) error {
	p := in.p
	if in.tls {
		if err := d.addTLS(ctx, p.qmp, in.v.rec, in.tlsDir, true); err != nil {
			return err
		}
	}
	// The NBD server listens on a socket bound here and handed over, so
	// no other process can take the port between choosing and binding it.
	ln, err := listenFile(in.a.host)
	if err != nil {
		return err
	}
	defer ln.f.Close() // QEMU holds its own copy
	if err := p.qmp.Getfd(ctx, nbdListenFD, ln.f); err != nil {
		return err
	}
	in.a.nbd = ln.port
	args := qmp.Args{"addr": qmp.Args{"type": "fd", "data": qmp.Args{"str": nbdListenFD}}}
	if in.tls {
		args["tls-creds"] = tlsServerObj
	}
	if err := p.qmp.Execute(ctx, "nbd-server-start", args, nil); err != nil {
		return err
	}
	for _, dr := range in.v.rec.Disks {
		if _, ok := in.shared[dr.Name]; ok {
			continue
		}
		if err := p.qmp.Execute(ctx, "block-export-add", qmp.Args{"type": "nbd", "id": "exp-" + dr.deviceID(),
			"node-name": dr.node(dr.Active), "name": dr.deviceID(), "writable": true}, nil); err != nil {
			return err
		}
	}
	return nil
}

// serveIncoming runs the target's end of the control connection until the
// VM has arrived or the migration is abandoned.
func (d *Driver) serveIncoming(in *incoming) {
	id := in.v.rec.Config.ID
	defer in.srv.ln.Close()
	defer func() {
		// A migration that did not arrive ends the boost here (one that
		// did ends it boostHold after the resume: finishIncoming).
		if in.unboost != nil && !in.arrived {
			in.unboost()
		}
	}()
	defer func() {
		if in.ticks != nil {
			in.ticks.Stop()
		}
	}()
	abandon := func(why string) {
		in.v.mu.Lock()
		defer in.v.mu.Unlock()
		// QEMU may have exited and been reaped (proc nil): still ours to drop.
		if !in.v.deleted && (in.v.proc == in.p || in.v.proc == nil) {
			d.log.Warn("qemu: incoming migration abandoned; deleting the copy", "vm", id, "why", why)
			d.deleteLocked(context.Background(), in.v)
		}
	}
	conn, err := in.srv.accept(in.p.exited)
	if err != nil {
		abandon(err.Error())
		return
	}
	defer conn.Close()
	// QEMU ending before the switchover ends the conversation. From
	// "done" on, finishIncoming watches QEMU itself (and a cold arrival
	// quits it on purpose).
	settling := make(chan struct{})
	go func() {
		select {
		case <-in.p.exited:
			conn.Close()
		case <-settling:
		}
	}()
	r := bufio.NewReader(conn)
	authed := false
	for {
		m, err := readMsg(conn, r)
		if err != nil {
			if !in.arrived {
				abandon(fmt.Sprintf("control connection: %v", err))
			}
			return
		}
		if !authed && (m.Op != "prepare" || m.Key != in.a.key) {
			writeMsg(conn, ctlMsg{Error: "not authorised"})
			abandon("a control client without the migration key")
			return
		}
		authed = true
		var rep ctlMsg
		switch m.Op {
		case "prepare":
			rep = d.prepareIncoming(in, m)
		case "ping":
			rep = ctlMsg{OK: true}
		case "recover": // the post-copy stream broke (migrate_postcopy.go)
			if port, err := d.recoverIncoming(in); err != nil {
				rep = errReply(err)
			} else {
				rep = ctlMsg{OK: true, Port: port}
			}
		case "time":
			rep = ctlMsg{OK: true, Now: d.clock.Now().UnixNano()}
		case "done":
			if in.arrived { // a repeated "done": nothing more to do
				rep = ctlMsg{OK: true}
				break
			}
			close(settling)
			if err := d.finishIncoming(in); err != nil {
				rep = errReply(err)
				writeMsg(conn, rep)
				abandon(err.Error())
				return
			}
			in.arrived = true
			rep = ctlMsg{OK: true}
			if !in.resumed.IsZero() {
				rep.Now = in.resumed.UnixNano() // the source measures the pause
			}
		case "ticks":
			rep = ctlMsg{OK: true}
			if in.ticks != nil {
				rep.Ticks = in.ticks.waitTicks(max(m.Want, 1), 4*time.Second)
			}
			rep.Now = d.clock.Now().UnixNano() // when the wait ended: bounds a stall
		case "abort":
			if !in.arrived {
				abandon("the source aborted")
			}
			writeMsg(conn, ctlMsg{OK: true})
			return
		default:
			rep = ctlMsg{Error: "unknown op " + m.Op}
		}
		if err := writeMsg(conn, rep); err != nil && !in.arrived {
			abandon(err.Error())
			return
		}
	}
}

// prepareIncoming sets the migration capabilities the source asked for
// and starts listening for the stream.
func (d *Driver) prepareIncoming(in *incoming, m ctlMsg) ctlMsg {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, p := in.v, in.p
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.proc != p || v.deleted {
		return ctlMsg{Error: "the incoming VM is gone"}
	}
	for name, file := range in.shared {
		if m.Disks[name] != file {
			return ctlMsg{Error: fmt.Sprintf("disk %s: the target found %s on shared storage, the source runs %q", name, file, m.Disks[name])}
		}
	}
	if m.Cold { // the disks are all that moves: the NBD exports are ready
		in.cold = true
		return ctlMsg{OK: true, Disks: in.shared}
	}
	in.postcopy = m.PostCopy
	if in.postcopy {
		// In post-copy a main-loop read of a page not yet arrived blocks
		// QEMU's main loop, and with it the monitor that would recover a
		// broken stream: no balloon statistics (the guest's buffer is
		// read from the main loop) until all memory is here.
		p.qmp.Execute(ctx, "qom-set", qmp.Args{"path": balloonPath, "property": "guest-stats-polling-interval", "value": 0}, nil)
	}
	if msg := checkMultifdAsk(m); msg != "" {
		return ctlMsg{Error: msg}
	}
	// multifd must be set here before migrate-incoming: the target
	// accepts the channels only when it expects them.
	mfCap, params := multifdSetup(m.Multifd)
	caps := []qmp.Args{{"capability": "postcopy-ram", "state": m.PostCopy}, mfCap}
	if err := p.qmp.Execute(ctx, "migrate-set-capabilities", qmp.Args{"capabilities": caps}, nil); err != nil {
		return errReply(err)
	}
	if in.tls {
		if params == nil {
			params = qmp.Args{}
		}
		params["tls-creds"] = tlsServerObj
	}
	if params != nil {
		if err := p.qmp.Execute(ctx, "migrate-set-parameters", params, nil); err != nil {
			return errReply(err)
		}
	}
	// QEMU binds a free port itself (port 0) and says which: nothing can
	// take it in between.
	uri := "tcp:" + net.JoinHostPort(in.a.host, "0")
	if err := p.qmp.Execute(ctx, "migrate-incoming", qmp.Args{"uri": uri}, nil); err != nil {
		return errReply(err)
	}
	port, err := incomingPort(ctx, p)
	if err != nil {
		return errReply(err)
	}
	if in.unboost == nil {
		in.unboost = d.boost(v.rec, p)
	}
	rep := ctlMsg{OK: true, Disks: in.shared, Port: port}
	if m.Multifd > 1 {
		rep.Multifd = m.Multifd
	}
	return rep
}

// finishIncoming runs at the switchover: the stream has loaded (or, in
// post-copy, the device state has), the source is paused and the disks
// are in sync. The NBD server stops, the adopted disks become ours, and
// the guest resumes.
func (d *Driver) finishIncoming(in *incoming) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, p := in.v, in.p
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.proc != p || v.deleted {
		return fmt.Errorf("qemu: the incoming VM is gone")
	}
	if in.cold {
		return d.finishColdIncoming(ctx, in)
	}
	if err := awaitLoaded(ctx, p); err != nil {
		return err
	}
	// The adopted disks become ours before the guest runs here (the
	// source deletes its copy next); back to the source if it cannot run.
	restore, err := d.handOver(ctx, in)
	if err != nil {
		return err
	}
	in.ticks = watchTicks(d.SerialLog(v.rec.Config.ID), true, d.clock.Now)
	resumes := p.qmp.Subscribe("RESUME")
	defer resumes.Close()
	loaded := d.clock.Now()
	if err := p.qmp.Cont(ctx); err != nil {
		restore()
		return err
	}
	if in.unboost != nil && !in.postcopy {
		time.AfterFunc(boostHold, in.unboost)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
	if ev, err := resumes.Wait(wctx, nil); err == nil {
		in.resumed = ev.Timestamp
	}
	wcancel()
	d.log.Debug("qemu: incoming resumed", "vm", v.rec.Config.ID, "handOverAndCont", d.clock.Now().Sub(loaded))
	// The migration's settings must not outlive it: a later memory
	// snapshot is an outgoing migration, and the server credentials
	// failed it ("Expected TLS credentials for a client endpoint"). In
	// post-copy they are still needed until all memory has arrived.
	if in.postcopy {
		go func() {
			d.resetWhenDone(in)
			// The guest pulled its pages until now: the boost holds on.
			if in.unboost != nil {
				time.AfterFunc(boostHold, in.unboost)
			}
		}()
	} else if err := resetMigration(ctx, p); err != nil {
		d.log.Warn("qemu: clearing the incoming migration's settings", "vm", v.rec.Config.ID, "err", err)
	}
	d.arrived(v)
	d.log.Info("qemu: incoming migration arrived", "vm", v.rec.Config.ID)
	return nil
}

// nbdListenFD names the NBD server's listening socket in QEMU.
const nbdListenFD = "vpool-nbd-listen"

// listener is a listening TCP socket as a file, to hand to QEMU.
type listener struct {
	f    *os.File
	port int
}

// listenFile listens on host at a free port and returns the socket as a
// file (the net.Listener itself is closed; the file keeps the socket).
func listenFile(host string) (listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return listener{}, fmt.Errorf("qemu: %w", err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return listener{}, fmt.Errorf("qemu: %w", err)
	}
	return listener{f: f, port: ln.Addr().(*net.TCPAddr).Port}, nil
}

// incomingPort is the port QEMU bound for migrate-incoming (query-migrate
// names its socket addresses while it waits).
func incomingPort(ctx context.Context, p *process) (int, error) {
	var mi struct {
		Addrs []struct {
			Port string `json:"port"`
		} `json:"socket-address"`
	}
	if err := p.qmp.Execute(ctx, "query-migrate", nil, &mi); err != nil {
		return 0, err
	}
	for _, a := range mi.Addrs {
		if n, err := strconv.Atoi(a.Port); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("qemu: migrate-incoming reports no listening port")
}

// awaitLoaded waits until the incoming stream has loaded (in post-copy:
// the device state) and the VM waits paused. It polls every 2 ms: the
// guest is paused on both sides meanwhile.
func awaitLoaded(ctx context.Context, p *process) error {
	for {
		st, err := p.qmp.QueryStatus(ctx)
		if err != nil {
			return err
		}
		switch st.Status {
		case "paused", "running", "prelaunch":
			return nil
		case "inmigrate":
		default:
			return fmt.Errorf("qemu: incoming migration ended in state %s", st.Status)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("qemu: QEMU exited while loading the migration stream")
		case <-ctx.Done():
			return fmt.Errorf("qemu: waiting for the incoming migration: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// handOver ends the disk copy at the switchover: the NBD server stops and
// the disks adopted on shared storage become this driver's. restore gives
// them back when what follows fails.
func (d *Driver) handOver(ctx context.Context, in *incoming) (restore func(), err error) {
	if err := in.p.qmp.Execute(ctx, "nbd-server-stop", nil, nil); err != nil {
		return func() {}, err
	}
	restore, err = d.takeOwnership(in.v.rec, in.shared)
	if err != nil {
		restore()
		return func() {}, err
	}
	return restore, nil
}

// arrived makes an incoming VM this host's own (listed, kept by the next
// driver).
func (d *Driver) arrived(v *vm) {
	os.Remove(filepath.Join(d.vmDir(v.rec.Config.ID), incomingMarker))
	v.arriving.Store(false)
}

// checkMultifdAsk checks the channels a source asks for in its prepare
// (the source is a joined host, not trusted): at most maxMultifdChannels,
// and not with post-copy. "" when the ask is fine.
func checkMultifdAsk(m ctlMsg) string {
	switch {
	case m.Multifd < 0 || m.Multifd > maxMultifdChannels:
		return fmt.Sprintf("multifd channels must be 0 to %d (asked for %d)", maxMultifdChannels, m.Multifd)
	case m.Multifd > 1 && m.PostCopy:
		return "multifd cannot be combined with post-copy"
	}
	return ""
}
