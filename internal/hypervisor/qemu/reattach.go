package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// Re-attach. A new driver (an agent restarted) adopts the QEMUs its
// records say run. A restart must never stop a VM: when a live QEMU's
// monitor does not answer — QEMU serves one QMP client at a time, so an
// operator's qmp-shell is enough, or QEMU is stopped or stuck — the VM is
// left running and listed as unreachable (StateUnknown, with the reason),
// every operation but Kill and Delete is refused (ErrUnreachable), and a
// goroutine keeps trying to attach, with backoff, until it succeeds, the
// process ends (the VM is then crashed), or the VM is deleted. Deciding
// to kill it is the operator's (or HA's) call, through Kill or Delete.
//
// An adopted QEMU may hold what an outgoing migration whose agent died
// left behind (block jobs, NBD client nodes, migration state and TLS
// credentials): cleanLeftovers removes them (migrate_leftovers.go).

// stuckQEMU is a live QEMU the driver could not attach to.
type stuckQEMU struct {
	pid   int
	since time.Time
	err   string
}

// unreachableReason is what List says about an unreachable VM (it travels
// to the tenant: no paths).
const unreachableReason = "monitor unreachable: the VM's QEMU runs but its QMP monitor does not answer " +
	"(another QMP client, or QEMU stopped or stuck); the VM is left as it is and re-attach is retried"

// Re-attach timing: one attempt waits at most attachTimeout (less when
// Config.QMPTimeout is lower); retries back off from retryMin to retryMax.
const (
	attachTimeout = 10 * time.Second
	retryMin      = time.Second
	retryMax      = 15 * time.Second
)

// load reads every record under the state dir and re-attaches.
func (d *Driver) load() error {
	ents, err := os.ReadDir(filepath.Join(d.cfg.StateDir, "vms"))
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	var live []*vm
	for _, e := range ents {
		if !e.IsDir() || validID(e.Name()) != nil {
			continue
		}
		rec, err := d.loadRecord(e.Name())
		if errors.Is(err, hypervisor.ErrNotFound) {
			continue // an orphan dir; cleanOrphans removes it
		}
		if err != nil {
			return err
		}
		v := &vm{rec: rec}
		if rec.Run != nil && rec.Run.Helper {
			// A cold migration's helper QEMU outlived its agent: the VM
			// stays as it was; cleanOrphans kills the helper.
			d.cleanRuntime(rec)
			os.Remove(filepath.Join(d.vmDir(rec.Config.ID), helperSerialLog))
			rec.Run = nil
			if err := d.saveRecord(rec); err != nil {
				return err
			}
			d.log.Warn("qemu: dropping the helper of an unfinished cold migration", "vm", rec.Config.ID)
		}
		pid := 0
		if rec.Run != nil {
			if pid = d.livePid(rec); pid > 0 {
				v.stuck = &stuckQEMU{pid: pid, since: d.clock.Now()}
				v.committed.Store(int64(rec.Config.Spec.Memory + d.cfg.VMOverhead))
				live = append(live, v)
			} else if err := d.markDeadLocked(v, hypervisor.StateCrashed); err != nil {
				return err
			}
		}
		if err := d.recoverUser(rec, pid); err != nil {
			return err
		}
		d.vms[rec.Config.ID] = v
	}
	// One attempt each, at once: a stuck VM must not delay the others.
	var wg sync.WaitGroup
	for _, v := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !d.attachOnce(v) {
				go d.retryAttach(v)
			}
		}()
	}
	wg.Wait()
	return nil
}

// livePid returns the pid of rec's QEMU when it still runs (0 if not):
// the pid file's, checked to be this VM's QEMU.
func (d *Driver) livePid(rec *record) int {
	pid := rec.Run.Pid
	if b, err := os.ReadFile(filepath.Join(d.vmDir(rec.Config.ID), "qemu.pid")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pid = n
		}
	}
	if !d.isOurQEMU(pid, rec.Config.ID) {
		return 0
	}
	return pid
}

// attachOnce tries to attach to v's stuck QEMU once; it reports whether
// it is settled (attached, or the process is gone).
func (d *Driver) attachOnce(v *vm) bool {
	v.mu.Lock()
	st, id := v.stuck, v.rec.Config.ID
	if st == nil || v.deleted {
		v.mu.Unlock()
		return true
	}
	qmpPath := v.rec.Run.QMP
	v.mu.Unlock()
	if !d.isOurQEMU(st.pid, id) {
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.stuck == st && !v.deleted {
			d.log.Warn("qemu: VM died while no driver watched it", "vm", id, "pid", st.pid)
			if err := d.markDeadLocked(v, hypervisor.StateCrashed); err != nil {
				d.log.Warn("qemu: saving record", "vm", id, "err", err)
			}
		}
		return true
	}
	// Dial without the VM's lock: List and Kill must not wait for it.
	ctx, cancel := context.WithTimeout(d.ctx, min(attachTimeout, d.cfg.QMPTimeout))
	p, err := d.dialAdopt(ctx, qmpPath, st.pid)
	cancel()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stuck != st || v.deleted {
		if p != nil {
			p.detach() // killed or deleted meanwhile
		}
		return true
	}
	if err != nil {
		if st.err == "" {
			d.log.Warn("qemu: cannot reach the QMP monitor of a live QEMU; leaving it running, listed as unreachable, and retrying",
				"vm", id, "pid", st.pid, "err", err)
		}
		st.err = err.Error()
		return false
	}
	v.stuck, v.proc = nil, p
	v.live.Store(p)
	go d.watch(v, p)
	d.log.Info("qemu: re-attached", "vm", id, "pid", p.pid, "unreachable", d.clock.Now().Sub(st.since).Round(time.Millisecond))
	ctx, cancel = context.WithTimeout(d.ctx, d.cfg.QMPTimeout)
	defer cancel()
	d.cleanLeftovers(ctx, v, p)
	return true
}

// retryAttach retries attachOnce with backoff until it settles or the
// driver closes.
func (d *Driver) retryAttach(v *vm) {
	wait := retryMin
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.clock.After(wait):
		}
		if d.attachOnce(v) {
			return
		}
		wait = min(2*wait, retryMax)
	}
}

// dialAdopt connects to the QMP socket of the live QEMU pid and watches
// it: not our child, its exit is noticed through QMP, then the pid.
func (d *Driver) dialAdopt(ctx context.Context, qmpPath string, pid int) (*process, error) {
	conn, err := qmp.Dial(ctx, qmpPath, d.qmpOptions())
	if err != nil {
		return nil, err
	}
	p := &process{pid: pid, qmp: conn, exited: make(chan struct{})}
	d.watchEvents(p)
	go func() {
		select {
		case <-conn.Done():
		case <-d.ctx.Done():
			return
		}
		for pidAlive(pid) {
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		close(p.exited)
	}()
	return p, nil
}

// markDeadLocked records that v's QEMU is gone (ended as state) and
// removes its runtime leftovers.
func (d *Driver) markDeadLocked(v *vm, state hypervisor.State) error {
	d.cleanRuntime(v.rec)
	v.rec.Run, v.rec.LastExit = nil, state
	v.stuck = nil
	v.committed.Store(0)
	return d.saveRecord(v.rec)
}

// killStuckLocked kills v's unreachable QEMU (Kill and Delete: an
// explicit order) and waits until it is gone.
func (d *Driver) killStuckLocked(ctx context.Context, v *vm) error {
	st := v.stuck
	if d.isOurQEMU(st.pid, v.rec.Config.ID) {
		if err := syscall.Kill(st.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("qemu: kill %s: %w", v.rec.Config.ID, err)
		}
		// Not our child: wait for its threads to go (its files, and so
		// its image locks, go with them).
		for deadline := time.Now().Add(15 * time.Second); pidAlive(st.pid); {
			if time.Now().After(deadline) {
				return fmt.Errorf("qemu: kill %s: pid %d did not exit", v.rec.Config.ID, st.pid)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("qemu: kill %s: %w", v.rec.Config.ID, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	d.log.Warn("qemu: killed an unreachable QEMU", "vm", v.rec.Config.ID, "pid", st.pid)
	return d.markDeadLocked(v, hypervisor.StateStopped)
}

// cleanOrphans kills QEMUs of this state dir that no record owns and
// removes VM directories without a record, and disk directories without
// a VM in local pools only (owner.go: nothing on a shared pool goes at
// start-up).
func (d *Driver) cleanOrphans() {
	for id, pids := range d.ourQEMUs() {
		v := d.vms[id]
		for _, pid := range pids {
			if v != nil && v.runs(pid) {
				continue
			}
			d.log.Warn("qemu: killing orphan QEMU", "vm", id, "pid", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if ents, err := os.ReadDir(filepath.Join(d.cfg.StateDir, "vms")); err == nil {
		for _, e := range ents {
			if _, ok := d.vms[e.Name()]; !ok && !strings.HasPrefix(e.Name(), ".") {
				d.log.Warn("qemu: removing orphan VM directory", "dir", e.Name())
				os.RemoveAll(d.vmDir(e.Name()))
			}
		}
	}
	for _, dir := range poolDirs(d.cfg.Pools) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		local := d.localPool(dir)
		for _, e := range ents {
			if _, ok := d.vms[e.Name()]; ok || !e.IsDir() || validID(e.Name()) != nil {
				continue
			}
			vmDir := filepath.Join(dir, e.Name())
			o, ok, err := readOwner(vmDir)
			switch {
			case err != nil || !ok || !d.mine(o, e.Name(), local):
				// Unknown, or another host's: not ours to judge.
			case !local:
				d.log.Warn("qemu: orphan disk directory on a shared pool left in place; delete it once no host uses it", "dir", vmDir)
			default:
				d.log.Warn("qemu: removing orphan disks", "dir", vmDir)
				os.RemoveAll(vmDir)
			}
		}
	}
}
