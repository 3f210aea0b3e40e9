package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// The guest-agent channel (docs/backup.md): every VM gets a
// virtio-serial port named org.qemu.guest_agent.0 whose host end is a
// unix socket in its VM dir. When the guest runs qemu-ga on it, the
// driver can ping it (a boot check for real images) and freeze the
// guest's file systems around a backup's point in time. The socket
// serves one client at a time and the protocol has no ids: the driver
// holds a per-VM lock for each use.

const (
	guestAgentPort       = "org.qemu.guest_agent.0"
	guestAgentSocketName = "qga.sock"
)

var _ hypervisor.GuestAgent = (*Driver)(nil)

func (d *Driver) guestAgentSocket(id string) string { return d.socketPath(id, guestAgentSocketName) }

// qgaLocks: channel socket → *sync.Mutex held while a client uses it.
var qgaLocks sync.Map

// withGuestAgent runs fn on a synchronised connection to the VM's guest
// agent. ErrNoGuestAgent when the VM does not run or has no channel.
func (d *Driver) withGuestAgent(ctx context.Context, id string, fn func(*qmp.GuestAgent) error) error {
	v, err := d.lockAny(id)
	if err != nil {
		return err
	}
	running := v.proc != nil
	v.mu.Unlock()
	return d.withGuestAgentOf(ctx, id, running, fn)
}

// withGuestAgentOf is withGuestAgent for a caller that already knows
// whether the VM runs (and may hold its lock).
func (d *Driver) withGuestAgentOf(ctx context.Context, id string, running bool, fn func(*qmp.GuestAgent) error) error {
	if !running {
		return fmt.Errorf("qemu: %s does not run: %w", id, hypervisor.ErrNoGuestAgent)
	}
	sock := d.guestAgentSocket(id)
	if _, err := os.Stat(sock); err != nil {
		return fmt.Errorf("qemu: %s was started without a guest-agent channel: %w", id, hypervisor.ErrNoGuestAgent)
	}
	mu, _ := qgaLocks.LoadOrStore(sock, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	ga, err := qmp.DialGuestAgent(ctx, sock)
	if err != nil {
		return fmt.Errorf("qemu: %s: the guest agent does not answer: %w", id, err)
	}
	defer ga.Close()
	return fn(ga)
}

// GuestPing implements hypervisor.GuestAgent.
func (d *Driver) GuestPing(ctx context.Context, id string) error {
	return d.withGuestAgent(ctx, id, func(ga *qmp.GuestAgent) error { return ga.Ping(ctx) })
}

// GuestExec runs a command in the guest through its agent (guest-exec)
// and returns its exit code and output. Tests use it to act inside a
// guest without a console script.
func (d *Driver) GuestExec(ctx context.Context, id, path string, args ...string) (qmp.ExecResult, error) {
	var res qmp.ExecResult
	err := d.withGuestAgent(ctx, id, func(ga *qmp.GuestAgent) error {
		var err error
		res, err = ga.Exec(ctx, path, args...)
		return err
	})
	return res, err
}

// Freeze timeouts: reaching the agent, the freeze itself (it flushes
// every file system's dirty data first) and each thaw attempt.
const (
	qgaDialTimeout   = 3 * time.Second
	qgaFreezeTimeout = time.Minute
	qgaThawTimeout   = 10 * time.Second
)

// freezeGuest asks the guest agent of a running VM to freeze its file
// systems. It returns the consistency the point will have and a thaw
// func to call right after the point (nil when nothing is to thaw). A
// failed or timed-out freeze is thawed at once (the agent may have
// frozen some file systems before it failed) and gives a
// crash-consistent point with the reason.
func (d *Driver) freezeGuest(ctx context.Context, id string) (hypervisor.BackupConsistency, func()) {
	sock := d.guestAgentSocket(id)
	if _, err := os.Stat(sock); err != nil {
		return hypervisor.BackupConsistency{Reason: "the VM has no guest-agent channel (started before vpool gave VMs one)"}, nil
	}
	mu, _ := qgaLocks.LoadOrStore(sock, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	dctx, cancel := context.WithTimeout(ctx, qgaDialTimeout)
	ga, err := qmp.DialGuestAgent(dctx, sock)
	cancel()
	if err != nil {
		mu.(*sync.Mutex).Unlock()
		return hypervisor.BackupConsistency{Reason: "no guest agent answered in the VM: " + err.Error()}, nil
	}
	release := func() {
		ga.Close()
		mu.(*sync.Mutex).Unlock()
	}
	fctx, cancel := context.WithTimeout(ctx, qgaFreezeTimeout)
	n, err := ga.FSFreeze(fctx)
	cancel()
	if err != nil {
		d.thawGuest(ctx, id, ga, sock)
		release()
		return hypervisor.BackupConsistency{Reason: "the guest agent could not freeze the file systems: " + err.Error()}, nil
	}
	thaw := func() {
		d.thawGuest(ctx, id, ga, sock)
		release()
	}
	if n == 0 {
		// Nothing was flushed: the point is no better than a crash's.
		return hypervisor.BackupConsistency{Reason: "the guest agent found no file system to freeze"}, thaw
	}
	return hypervisor.BackupConsistency{Application: true, FrozenFilesystems: n}, thaw
}

// thawGuest thaws the guest's file systems, retrying on a fresh
// connection when the first is out of step (a freeze that timed out
// leaves it so). A guest left frozen stops writing: this is logged
// loudly when every attempt fails.
func (d *Driver) thawGuest(ctx context.Context, id string, ga *qmp.GuestAgent, sock string) {
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for attempt := 0; attempt < 3; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, qgaThawTimeout)
		if attempt > 0 {
			fresh, err := qmp.DialGuestAgent(tctx, sock)
			if err != nil {
				cancel()
				errs = append(errs, err)
				continue
			}
			defer fresh.Close()
			ga = fresh
		}
		_, err := ga.FSThaw(tctx)
		if err == nil {
			cancel()
			return
		}
		// Thawing a guest that is not frozen is an error for qemu-ga:
		// ask its status before trying again.
		st, serr := ga.FSFreezeStatus(tctx)
		cancel()
		if serr == nil && st == "thawed" {
			return
		}
		errs = append(errs, err)
	}
	d.log.Error("the guest's file systems may still be frozen: thaw failed", "vm", id, "err", errors.Join(errs...))
}
