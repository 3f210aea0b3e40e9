package qemu

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
)

var _ hypervisor.Fencer = (*Driver)(nil)

// KillAll sends SIGKILL to every VM's live QEMU before it asks or waits
// for anything: not its state over QMP (a round trip a VM), not an
// operation that holds a VM (a migration, a slow stop), not another
// QEMU's exit. A self-fence stops every guest within the same few
// microseconds; the VMs' watchers reap them as usual. Then it lists the
// VMs: one still running, paused or unknown (a QEMU the driver could not
// attach to, one started meanwhile) is killed the slow way.
func (d *Driver) KillAll(ctx context.Context) ([]hypervisor.Info, error) {
	d.mu.Lock()
	live := map[string]*process{}
	for id, v := range d.vms {
		if v.arriving.Load() {
			continue // an incoming migration runs no guest yet
		}
		if p := v.live.Load(); p != nil && !p.hasExited() {
			live[id] = p
		}
	}
	d.mu.Unlock()
	var errs []error
	for id, p := range live {
		p.setEnding()
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("qemu: kill %s (pid %d): %w", id, p.pid, err))
			delete(live, id)
		}
	}
	for id, p := range live {
		if err := p.wait(ctx, 15*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("qemu: kill %s: %w", id, err))
			delete(live, id)
		}
	}
	infos, err := d.List(ctx)
	if err != nil {
		return nil, errors.Join(append(errs, err)...)
	}
	var out []hypervisor.Info
	for _, in := range infos {
		if live[in.ID] != nil {
			out = append(out, in)
			continue
		}
		if in.State != hypervisor.StateRunning && in.State != hypervisor.StatePaused && in.State != hypervisor.StateUnknown {
			continue
		}
		if err := d.Kill(ctx, in.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, in)
	}
	return out, errors.Join(errs...)
}
