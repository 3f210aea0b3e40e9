package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// get returns the VM with id, or an error wrapping ErrNotFound.
func (d *Driver) get(id string) (*vm, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vms[id]
	if !ok {
		return nil, fmt.Errorf("qemu: %s: %w", id, hypervisor.ErrNotFound)
	}
	return v, nil
}

// lock returns the VM with id locked and its process state refreshed. A
// VM whose QEMU runs unreachable (reattach.go) is refused: only Kill and
// Delete (lockAny) act on it.
func (d *Driver) lock(id string) (*vm, error) {
	v, err := d.lockAny(id)
	if err != nil {
		return nil, err
	}
	if v.stuck != nil {
		v.mu.Unlock()
		return nil, fmt.Errorf("qemu: %s: %w", id, hypervisor.ErrUnreachable)
	}
	return v, nil
}

// lockAny is lock that also returns an unreachable VM.
func (d *Driver) lockAny(id string) (*vm, error) {
	v, err := d.get(id)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if v.deleted {
		v.mu.Unlock()
		return nil, fmt.Errorf("qemu: %s: %w", id, hypervisor.ErrNotFound)
	}
	if v.proc != nil && v.proc.hasExited() {
		d.reapLocked(v, v.proc)
	}
	return v, nil
}

// Create makes the VM's disks and record. A failed Create leaves nothing.
func (d *Driver) Create(ctx context.Context, cfg hypervisor.VMConfig) (err error) {
	defer d.public(&err, "create", cfg.ID)
	if err := checkConfig(cfg); err != nil {
		return err
	}
	if cfg.AdoptEpoch > 0 {
		return d.createAdopting(ctx, cfg)
	}
	spec := cfg.Spec
	spec.Disks = append([]model.Disk(nil), cfg.Spec.Disks...)
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("qemu: create %s: %w", cfg.ID, err)
	}
	cfg.Spec = spec
	v := &vm{}
	v.mu.Lock()
	defer v.mu.Unlock()
	d.mu.Lock()
	if _, ok := d.vms[cfg.ID]; ok {
		d.mu.Unlock()
		return fmt.Errorf("qemu: create %s: %w", cfg.ID, hypervisor.ErrExists)
	}
	d.vms[cfg.ID] = v
	d.mu.Unlock()

	rev := &reverter{}
	defer rev.fail()
	rev.add(func() {
		d.mu.Lock()
		delete(d.vms, cfg.ID)
		d.mu.Unlock()
		d.releaseCopies(cfg.ID)
	})
	dir := d.vmDir(cfg.ID)
	os.RemoveAll(dir) // a leftover without a record
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("qemu: create %s: %w", cfg.ID, err)
	}
	rev.add(func() { os.RemoveAll(dir) })
	rev.add(func() { d.keys.DeleteKeys(context.Background(), cfg.ID) })
	rec := &record{Config: cfg, CreatedAt: d.clock.Now().UTC(), LastExit: hypervisor.StateStopped}
	if err := d.assignUser(rec); err != nil { // after the VM dir: it holds the claim
		return fmt.Errorf("qemu: create %s: %w", cfg.ID, err)
	}
	rev.add(func() { d.releaseUser(rec) })
	disks, err := d.makeDisks(ctx, cfg, rev)
	if err != nil {
		return fmt.Errorf("qemu: create %s: %w", cfg.ID, err)
	}
	rec.Disks = disks
	rec.NICs = makeNICs(cfg)
	if err := d.saveRecord(rec); err != nil {
		return err
	}
	v.rec = rec
	v.info.Store(&hypervisor.Info{ID: cfg.ID, State: hypervisor.StateStopped, VCPUs: cfg.Spec.VCPUs, Memory: cfg.Spec.Memory, Config: cfg})
	rev.success()
	d.log.Info("qemu: created", "vm", cfg.ID, "disks", len(disks))
	return nil
}

func makeNICs(cfg hypervisor.VMConfig) []nicRec {
	nics := cfg.Spec.NICs
	if len(nics) == 0 {
		nics = []model.NIC{{}} // every VM gets a network
	}
	out := make([]nicRec, len(nics))
	for i, n := range nics {
		mac := n.MAC
		if mac == "" {
			mac = macFor(cfg.ID, i)
		}
		out[i] = nicRec{ID: fmt.Sprintf("net%d", i), MAC: mac, Name: n.Name, Port: portOf(cfg, i)}
	}
	return out
}

// Start boots a stopped VM. Starting a running or paused VM does nothing.
func (d *Driver) Start(ctx context.Context, id string) (err error) {
	defer d.public(&err, "start", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if v.proc != nil {
		return nil
	}
	if err := d.checkOwnership(v); err != nil {
		return err
	}
	return d.startLocked(ctx, v, startOpts{})
}

type startOpts struct {
	incoming string // -incoming value; the VM stays paused until told
	// helper starts the QEMU of a stopped VM for a cold migration
	// (migrate_cold.go): paused (-S) and never continued, not admitted
	// (the guest never runs), no resource controls, its own serial log.
	// The VM keeps counting as stopped or crashed (runRec.Helper).
	helper bool
}

func (d *Driver) startLocked(ctx context.Context, v *vm, o startOpts) error {
	id := v.rec.Config.ID
	spec := v.rec.Config.Spec
	if !o.helper {
		if err := d.admit(v, spec.Memory); err != nil {
			return err
		}
	}
	rev := &reverter{}
	defer rev.fail()
	rev.add(func() { v.committed.Store(0) })
	m, files, err := d.machine(ctx, v.rec, o, rev)
	for _, f := range files {
		defer f.Close()
	}
	if err != nil {
		return fmt.Errorf("qemu: start %s: %w", id, err)
	}
	start := d.clock.Now()
	p, err := d.launch(ctx, v, m, files)
	if err != nil {
		return fmt.Errorf("qemu: start %s: %w", id, err)
	}
	rev.add(func() { p.kill(context.Background()); p.qmp.Close() })
	if d.cg != nil {
		rev.add(func() { d.cg.remove(id) })
		if err := d.cg.attach(id, p.pid); err != nil {
			return err
		}
	}
	// The guest reports its memory use through the balloon every 2 s.
	if err := p.qmp.Execute(ctx, "qom-set", qmp.Args{"path": balloonPath, "property": "guest-stats-polling-interval", "value": 2}, nil); err != nil {
		d.log.Debug("qemu: balloon stats polling unavailable", "vm", id, "err", err)
	}
	if !o.helper {
		if err := d.applyControls(ctx, v.rec, p); err != nil {
			return fmt.Errorf("qemu: start %s: %w", id, err)
		}
	}
	if o.incoming == "" && !o.helper {
		if err := p.qmp.Cont(ctx); err != nil {
			return fmt.Errorf("qemu: start %s: %w", id, err)
		}
	}
	v.rec.Run = &runRec{
		Pid: p.pid, StartedAt: start.UTC(), QMP: m.QMPSocket, Console: m.ConsoleSocket,
		BootVCPUs: m.VCPUs, MaxVCPUs: m.MaxVCPUs, BootMemory: m.MemoryMiB * int64(model.MiB),
		MaxMemory: m.MaxMemMiB * int64(model.MiB), MemSlots: m.MemSlots, Cmdline: m.Args(),
		Ports: m.HotplugPorts, DiskPorts: diskPorts(m.Drives), Helper: o.helper,
	}
	if !o.helper { // a helper's VM keeps its stopped / crashed state
		v.rec.LastExit = ""
	}
	if err := d.saveRecord(v.rec); err != nil {
		return err
	}
	v.proc = p
	v.live.Store(p)
	go d.watch(v, p)
	rev.success()
	d.log.Info("qemu: started", "vm", id, "pid", p.pid, "accel", d.accel)
	return nil
}

// admit applies the capacity rule: guest memory plus VMOverhead of every
// running VM must fit in host memory minus HostReserve.
func (d *Driver) admit(v *vm, mem model.Bytes) error {
	total, err := hostMemory()
	if err != nil {
		return err
	}
	need := int64(mem + d.cfg.VMOverhead)
	d.mu.Lock()
	defer d.mu.Unlock()
	var used int64
	for _, o := range d.vms {
		if o != v {
			used += o.committed.Load()
		}
	}
	if avail := int64(total-d.cfg.HostReserve) - used; need > avail {
		return fmt.Errorf("qemu: start %s needs %s, %s free after the host reserve: %w",
			v.rec.Config.ID, model.Bytes(need), model.Bytes(max(avail, 0)), hypervisor.ErrNoCapacity)
	}
	v.committed.Store(need)
	return nil
}

// minHotplugMemory is the smallest VM that boots with DIMM slots.
const minHotplugMemory = 128 * model.MiB

// machine builds the QEMU invocation of rec. Key pipes are returned as
// files for the child; taps are created (and pushed on rev).
func (d *Driver) machine(ctx context.Context, rec *record, o startOpts, rev *reverter) (Machine, []*os.File, error) {
	cfg := rec.Config
	id := cfg.ID
	spec := cfg.Spec
	memMiB := int64(spec.Memory / model.MiB)
	m := Machine{
		Name: id, Accel: d.accel, Type: d.machineType,
		VCPUs: spec.VCPUs, MaxVCPUs: max(spec.VCPUs, d.cfg.MaxVCPUs),
		MemoryMiB:     memMiB,
		QMPSocket:     d.socketPath(id, "qmp.sock"),
		ConsoleSocket: d.socketPath(id, "console.sock"),
		SerialLog:     filepath.Join(d.vmDir(id), "serial.log"),
		PidFile:       filepath.Join(d.vmDir(id), "qemu.pid"),
		Balloon:       true, StartPaused: true, Incoming: o.incoming, Sandbox: true,
	}
	if !d.cfg.NoGuestAgent {
		m.GuestAgentSocket = d.guestAgentSocket(id)
	}
	if o.helper { // keep the VM's own serial logs as they are
		m.SerialLog = filepath.Join(d.vmDir(id), helperSerialLog)
	}
	m.CPUModel = d.cpuModelArg()
	if w := spec.Watchdog; w != nil {
		m.Watchdog = w.Action
		if m.Watchdog == "" {
			m.Watchdog = model.WatchdogReset
		}
	}
	if d.accel != "kvm" {
		m.TCGCacheMiB = int64(d.cfg.TCGCache / model.MiB)
	}
	// Memory hot-add costs the guest kernel early memory (the hotplug
	// range is described at boot): a 96 MiB Debian guest panics with it.
	if d.cfg.MemorySlots > 0 && d.cfg.MaxMemoryFactor > 1 && spec.Memory >= minHotplugMemory {
		m.MemSlots, m.MaxMemMiB = d.cfg.MemorySlots, memMiB*int64(d.cfg.MaxMemoryFactor)
	}
	var files []*os.File
	if img := cfg.Image; img != nil && img.Kernel != "" {
		m.Append = img.Cmdline
		var err error
		if m.Kernel, err = d.shareable(img.Kernel, id); err != nil {
			return m, files, err
		}
		if m.Initrd, err = d.shareable(img.Initrd, id); err != nil {
			return m, files, err
		}
	}
	seed, err := d.writeSeed(rec)
	if err != nil {
		return m, files, err
	}
	m.Seed = seed
	hotplug := isQ35(m.Type)
	for _, dr := range rec.Disks {
		drv := Drive{DeviceID: dr.deviceID(), Serial: truncate(dr.Name, 20), Layers: dr.driveLayers()}
		if dr.Index == 0 && m.Kernel == "" {
			drv.BootIndex = 1
		}
		if hotplug && dr.Index > 0 {
			drv.Bus = fmt.Sprintf("hp%d", len(m.HotplugPorts))
			m.HotplugPorts = append(m.HotplugPorts, drv.Bus)
		}
		if dr.Encrypted {
			key, err := d.keys.VolumeKey(ctx, id, dr.Name, false)
			if err != nil {
				return m, files, err
			}
			f, err := keyPipe(key)
			if err != nil {
				return m, files, err
			}
			files = append(files, f)
			m.Secrets = append(m.Secrets, Secret{ID: dr.secretID(), File: fmt.Sprintf("/dev/fd/%d", 2+len(files))})
		}
		m.Drives = append(m.Drives, drv)
	}
	if hotplug {
		for i := 0; i < sparePorts; i++ {
			m.HotplugPorts = append(m.HotplugPorts, fmt.Sprintf("hp%d", len(m.HotplugPorts)))
		}
	}
	if d.net == NetNone {
		return m, files, nil
	}
	if d.net == NetBridge {
		if err := d.ensureBridge(ctx); err != nil {
			return m, files, err
		}
	}
	for i := range rec.NICs {
		n := &rec.NICs[i]
		nd := NICDev{ID: n.ID, MAC: n.MAC}
		if d.net == NetBridge {
			tap, err := d.plugTap(ctx, rec, i, n)
			if err != nil {
				return m, files, err
			}
			rev.add(func() { d.removeTap(tap) })
			nd.Tap, n.Tap, nd.MTU = tap, tap, hostMTU(n)
			if d.users != nil { // QEMU, as the VM's user, gets the open tap (vmuser.go)
				f, err := openTap(tap)
				if err != nil {
					return m, files, err
				}
				files = append(files, f)
				nd.TapFD = 2 + len(files)
			}
		}
		m.NICs = append(m.NICs, nd)
	}
	return m, files, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// watch reaps p once it exits (unless the driver closed first).
func (d *Driver) watch(v *vm, p *process) {
	select {
	case <-p.exited:
	case <-d.ctx.Done():
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if d.ctx.Err() == nil {
		d.reapLocked(v, p)
	}
}

// reapLocked records p's end and removes its runtime leftovers: taps,
// cgroups, sockets, pid file.
func (d *Driver) reapLocked(v *vm, p *process) {
	if v.proc != p || v.deleted {
		return
	}
	v.proc = nil
	v.committed.Store(0)
	if p.qmp != nil {
		p.qmp.Close()
	}
	d.cleanRuntime(v.rec)
	if v.rec.Run == nil || !v.rec.Run.Helper {
		v.rec.LastExit = p.exitState()
	}
	v.rec.Run = nil
	if err := d.saveRecord(v.rec); err != nil {
		d.log.Warn("qemu: saving record after exit", "vm", v.rec.Config.ID, "err", err)
	}
	d.log.Info("qemu: exited", "vm", v.rec.Config.ID, "pid", p.pid, "state", v.rec.LastExit)
}

func (d *Driver) cleanRuntime(rec *record) {
	id := rec.Config.ID
	for i := range rec.NICs {
		d.removeTap(rec.NICs[i].Tap)
		rec.NICs[i].Tap = ""
	}
	if d.cg != nil {
		d.cg.remove(id)
	}
	for _, name := range []string{"qmp.sock", "console.sock", guestAgentSocketName} {
		os.Remove(d.socketPath(id, name))
	}
	os.Remove(filepath.Join(d.vmDir(id), "qemu.pid"))
}

// Stop presses the ACPI power button, waits up to timeout for the guest
// to power off, then asks QEMU to quit and finally kills it. A paused
// guest cannot see the button: QEMU is told to quit at once.
func (d *Driver) Stop(ctx context.Context, id string, timeout time.Duration) (err error) {
	defer d.public(&err, "stop", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	p := v.proc
	if p == nil {
		return nil
	}
	p.setEnding()
	st, err := p.qmp.QueryStatus(ctx)
	if err == nil && st.Running && timeout > 0 {
		if err := p.qmp.SystemPowerdown(ctx); err == nil {
			select {
			case <-p.exited:
			case <-d.clock.After(timeout):
				d.log.Info("qemu: guest ignored the power button; quitting", "vm", id, "timeout", timeout)
			case <-ctx.Done():
				return fmt.Errorf("qemu: stop %s: %w", id, ctx.Err())
			}
		}
	}
	if !p.hasExited() {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := p.qmp.Quit(qctx)
		cancel()
		if err != nil && !errors.Is(err, qmp.ErrClosed) {
			d.log.Info("qemu: quit failed; killing", "vm", id, "err", err)
		}
		if p.wait(ctx, 10*time.Second) != nil {
			if err := p.kill(ctx); err != nil {
				return fmt.Errorf("qemu: stop %s: %w", id, err)
			}
		}
	}
	d.reapLocked(v, p)
	return nil
}

// Kill ends QEMU at once (SIGKILL), an unreachable one too.
func (d *Driver) Kill(ctx context.Context, id string) (err error) {
	defer d.public(&err, "kill", id)
	v, err := d.lockAny(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	return d.killLocked(ctx, v)
}

func (d *Driver) killLocked(ctx context.Context, v *vm) error {
	if v.stuck != nil {
		return d.killStuckLocked(ctx, v)
	}
	p := v.proc
	if p == nil {
		return nil
	}
	if err := p.kill(ctx); err != nil {
		return fmt.Errorf("qemu: kill %s: %w", v.rec.Config.ID, err)
	}
	d.reapLocked(v, p)
	return nil
}

// Pause stops the guest's vCPUs.
func (d *Driver) Pause(ctx context.Context, id string) (err error) {
	defer d.public(&err, "pause", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if v.proc == nil {
		return fmt.Errorf("qemu: pause %s: not running: %w", id, hypervisor.ErrBadState)
	}
	if err := v.proc.qmp.Stop(ctx); err != nil {
		return fmt.Errorf("qemu: pause %s: %w", id, err)
	}
	return nil
}

// Resume continues a paused guest.
func (d *Driver) Resume(ctx context.Context, id string) (err error) {
	defer d.public(&err, "resume", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if v.proc == nil {
		return fmt.Errorf("qemu: resume %s: not running: %w", id, hypervisor.ErrBadState)
	}
	if err := v.proc.qmp.Cont(ctx); err != nil {
		return fmt.Errorf("qemu: resume %s: %w", id, err)
	}
	return nil
}

// SerialLog returns the path of the VM's serial console log (this boot).
func (d *Driver) SerialLog(id string) string { return filepath.Join(d.vmDir(id), "serial.log") }

// ConsoleSocket returns the unix socket of the VM's serial console: a
// client connected to it reads and types on ttyS0 (vpool vm console).
func (d *Driver) ConsoleSocket(id string) string { return d.socketPath(id, "console.sock") }

// Reboot resets the machine (not part of hypervisor.Driver).
func (d *Driver) Reboot(ctx context.Context, id string) (err error) {
	defer d.public(&err, "reboot", id)
	v, err := d.lock(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	if v.proc == nil {
		return fmt.Errorf("qemu: reboot %s: not running: %w", id, hypervisor.ErrBadState)
	}
	if err := v.proc.qmp.SystemReset(ctx); err != nil {
		return fmt.Errorf("qemu: reboot %s: %w", id, err)
	}
	return nil
}

// Delete kills the VM if it runs and removes its disks, snapshots, keys,
// sockets, logs and record.
func (d *Driver) Delete(ctx context.Context, id string) (err error) {
	defer d.public(&err, "delete", id)
	v, err := d.lockAny(id)
	if err != nil {
		return err
	}
	defer v.mu.Unlock()
	return d.deleteLocked(ctx, v)
}

func (d *Driver) deleteLocked(ctx context.Context, v *vm) error {
	id := v.rec.Config.ID
	if err := d.killLocked(ctx, v); err != nil {
		return err
	}
	d.cleanRuntime(v.rec)
	var errs []error
	errs = append(errs, removeDisks(d.ownedDisks(id, v.rec.Disks))) // shared storage: see owner.go
	for _, s := range v.rec.Snapshots {
		if s.StateFile != "" {
			os.Remove(s.StateFile)
		}
	}
	errs = append(errs, d.keys.DeleteKeys(ctx, id), os.RemoveAll(d.vmDir(id)))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("qemu: delete %s: %w", id, err)
	}
	d.releaseUser(v.rec) // its files are gone: the uid may serve another VM
	v.deleted = true
	d.mu.Lock()
	delete(d.vms, id)
	d.mu.Unlock()
	d.releaseCopies(id)
	d.log.Info("qemu: deleted", "vm", id)
	return nil
}

// List returns every VM, including ones an earlier driver started, but
// not incoming migrations that have not arrived: they are not this host's
// until the switchover, and an agent must not take them for arrived (or
// for orphans).
func (d *Driver) List(ctx context.Context) ([]hypervisor.Info, error) {
	d.mu.Lock()
	ids := make([]string, 0, len(d.vms))
	for id, v := range d.vms {
		if !v.arriving.Load() {
			ids = append(ids, id)
		}
	}
	d.mu.Unlock()
	sort.Strings(ids)
	out := make([]hypervisor.Info, 0, len(ids))
	for _, id := range ids {
		if in, ok := d.infoOf(ctx, id); ok {
			out = append(out, in)
		}
	}
	return out, nil
}

// infoOf returns the VM's info; when an operation holds the VM it
// returns the last info seen instead of waiting.
func (d *Driver) infoOf(ctx context.Context, id string) (hypervisor.Info, bool) {
	v, err := d.get(id)
	if err != nil {
		return hypervisor.Info{}, false // deleted meanwhile
	}
	if !v.mu.TryLock() {
		if in := v.info.Load(); in != nil {
			out := *in
			// A QEMU that is gone (KillAll, a crash) is not listed as
			// running while an operation or its watcher holds the VM.
			if p := v.live.Load(); p != nil && p.hasExited() && (out.State == hypervisor.StateRunning || out.State == hypervisor.StatePaused) {
				out.State = p.exitState()
			}
			return out, true
		}
		v.mu.Lock() // never listed yet: wait once
	}
	defer v.mu.Unlock()
	if v.deleted || v.rec == nil {
		return hypervisor.Info{}, false
	}
	if v.proc != nil && v.proc.hasExited() {
		d.reapLocked(v, v.proc)
	}
	in := d.infoLocked(ctx, v)
	v.info.Store(&in)
	return in, true
}

func (d *Driver) infoLocked(ctx context.Context, v *vm) hypervisor.Info {
	in := hypervisor.Info{ID: v.rec.Config.ID, VCPUs: v.rec.Config.Spec.VCPUs,
		Memory: v.rec.Config.Spec.Memory, Config: v.rec.Config}
	in.State, in.Reason = d.stateLocked(ctx, v)
	switch {
	case v.stuck != nil:
		in.Pid, in.StartedAt = v.stuck.pid, v.rec.Run.StartedAt
	case v.proc != nil && v.rec.Run != nil && !v.rec.Run.Helper:
		in.Pid = v.proc.pid
		in.StartedAt = v.rec.Run.StartedAt
		in.Watchdog = v.proc.lastWatchdog()
	}
	return in
}

// stateLocked asks QEMU for the run state of a live VM; the reason is
// set for StateUnknown.
func (d *Driver) stateLocked(ctx context.Context, v *vm) (hypervisor.State, string) {
	if v.stuck != nil {
		return hypervisor.StateUnknown, unreachableReason
	}
	if v.proc == nil || (v.rec.Run != nil && v.rec.Run.Helper) {
		if v.rec.LastExit == hypervisor.StateCrashed {
			return hypervisor.StateCrashed, ""
		}
		return hypervisor.StateStopped, ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := v.proc.qmp.QueryStatus(ctx)
	if err != nil {
		if v.proc.hasExited() || !pidAlive(v.proc.pid) {
			return hypervisor.StateStopped, ""
		}
		// Alive but not answering (stopped, stuck): not ours to judge.
		return hypervisor.StateUnknown, "monitor not answering: the VM's QEMU runs but does not answer its QMP monitor (stopped or stuck)"
	}
	switch st.Status {
	case "running":
		return hypervisor.StateRunning, ""
	case "guest-panicked", "internal-error":
		return hypervisor.StateCrashed, ""
	case "shutdown":
		return hypervisor.StateStopped, ""
	default: // paused, prelaunch, inmigrate, postmigrate, suspended, ...
		return hypervisor.StatePaused, ""
	}
}
