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

// KillAll sends SIGKILL to every running or paused VM's QEMU before it
// waits for any of them, and without waiting for an operation that holds
// a VM (a migration, a slow stop): a self-fence stops every guest within
// the same few microseconds. The VMs' watchers reap them as usual. A QEMU
// the driver could not attach to (listed unknown) is killed the slow way,
// after the others.
func (d *Driver) KillAll(ctx context.Context) ([]hypervisor.Info, error) {
	infos, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	type hit struct {
		in hypervisor.Info
		p  *process
	}
	var hits []hit
	var slow []hypervisor.Info
	var errs []error
	for _, in := range infos {
		if in.State != hypervisor.StateRunning && in.State != hypervisor.StatePaused && in.State != hypervisor.StateUnknown {
			continue
		}
		v, err := d.get(in.ID)
		if err != nil {
			continue // deleted meanwhile
		}
		p := v.live.Load()
		if p == nil || in.State == hypervisor.StateUnknown {
			slow = append(slow, in)
			continue
		}
		if p.hasExited() {
			continue // killed already; its watcher reaps it
		}
		p.setEnding()
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("qemu: kill %s (pid %d): %w", in.ID, p.pid, err))
			continue
		}
		hits = append(hits, hit{in, p})
	}
	var out []hypervisor.Info
	for _, h := range hits {
		if err := h.p.wait(ctx, 15*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("qemu: kill %s: %w", h.in.ID, err))
			continue
		}
		out = append(out, h.in)
	}
	for _, in := range slow {
		if err := d.Kill(ctx, in.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, in)
	}
	return out, errors.Join(errs...)
}
