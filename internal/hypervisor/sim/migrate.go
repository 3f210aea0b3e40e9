package sim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Registry connects simulated hosts of one process so that VMs migrate
// between them. Incoming migrations are addressed "sim://<host>/<id>/<n>".
type Registry struct {
	mu       sync.Mutex
	hosts    map[string]*Host
	incoming map[string]incoming // addr -> target
	seq      int
}

type incoming struct {
	host *Host
	id   string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{hosts: map[string]*Host{}, incoming: map[string]incoming{}}
}

func (r *Registry) add(h *Host) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hosts[h.cfg.Name] = h
}

// Host returns the registered host with that name, or nil.
func (r *Registry) Host(name string) *Host {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hosts[name]
}

func (r *Registry) dropIncoming(h *Host, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for a, in := range r.incoming {
		if in.host == h && in.id == id {
			delete(r.incoming, a)
		}
	}
}

// defaultBandwidth is the simulated migration bandwidth when the options
// give none.
const defaultBandwidth = 1 << 30 // bytes/s

// MigrateIn reserves room for cfg on this host and returns the address the
// source sends to. The VM is not listed until the migration completes.
func (d *Driver) MigrateIn(_ context.Context, cfg hypervisor.VMConfig) (string, error) {
	h := d.h
	r := h.cfg.Registry
	if r == nil && h.cfg.MigrationHost == "" {
		return "", fmt.Errorf("sim: migrate in %s: host %s has no registry: %w", cfg.ID, h.cfg.Name, hypervisor.ErrUnsupported)
	}
	if err := validConfig(cfg); err != nil {
		return "", err
	}
	if err := h.fail("migrate-in", cfg.ID); err != nil {
		return "", err
	}
	h.mu.Lock()
	if _, ok := h.vms[cfg.ID]; ok {
		h.mu.Unlock()
		return "", fmt.Errorf("sim: migrate in %s: %w", cfg.ID, hypervisor.ErrExists)
	}
	if err := h.fitsLocked(cfg.ID, cfg.Spec.Demand()); err != nil {
		h.mu.Unlock()
		return "", err
	}
	h.vms[cfg.ID] = &vm{Config: copyConfig(cfg), State: hypervisor.StatePaused, Incoming: true, Touched: h.cfg.Clock.Now()}
	h.mu.Unlock()
	if r == nil {
		addr, err := h.migrateInNet(cfg.ID)
		if err != nil {
			h.mu.Lock()
			delete(h.vms, cfg.ID)
			h.mu.Unlock()
		}
		return addr, err
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	addr := fmt.Sprintf("sim://%s/%s/%d", h.cfg.Name, cfg.ID, r.seq)
	r.incoming[addr] = incoming{host: h, id: cfg.ID}
	return addr, nil
}

// MigrateOut moves a VM to the host waiting at addr: a running or paused VM
// live (simulated pre-copy over MigrateDelay), a stopped or crashed one
// cold (a short simulated disk copy, MigrateDelay/4). The VM keeps its CPU
// time, controls and snapshots; on success it is gone here and runs there
// (live) or is stopped there (cold). Cancelling ctx or the target going
// away fails it and leaves the VM here as it was.
func (d *Driver) MigrateOut(ctx context.Context, id, addr string, opts hypervisor.MigrateOptions, progress func(hypervisor.MigrationProgress)) (hypervisor.MigrationResult, error) {
	h := d.h
	r := h.cfg.Registry
	if r == nil && h.cfg.MigrationHost == "" {
		return hypervisor.MigrationResult{}, fmt.Errorf("sim: migrate out %s: %w", id, hypervisor.ErrUnsupported)
	}
	if err := h.fail("migrate-out", id); err != nil {
		return hypervisor.MigrationResult{}, err
	}
	if r == nil {
		return d.migrateOutNet(ctx, id, addr, opts, progress)
	}
	h.mu.Lock()
	v, err := h.getLocked("migrate out", id)
	var (
		mem, disk model.Bytes
		cold      bool
	)
	if err == nil {
		mem, disk = v.Config.Spec.Memory, v.Config.Spec.DiskSize()
		cold = v.State == hypervisor.StateStopped || v.State == hypervisor.StateCrashed
		if !cold && v.State != hypervisor.StateRunning && v.State != hypervisor.StatePaused {
			err = fmt.Errorf("sim: migrate out %s: vm is %s: %w", id, v.State, hypervisor.ErrBadState)
		}
	}
	h.mu.Unlock()
	if err != nil {
		return hypervisor.MigrationResult{}, err
	}
	r.mu.Lock()
	in, ok := r.incoming[addr]
	r.mu.Unlock()
	if !ok || in.id != id {
		return hypervisor.MigrationResult{}, fmt.Errorf("sim: migrate out %s: nobody waits at %q", id, addr)
	}
	if cold {
		return d.migrateCold(ctx, id, addr, in, opts, int64(disk), progress)
	}
	// Simulated pre-copy: four rounds over the configured delay.
	total := int64(mem)
	for i := 1; i <= 4; i++ {
		if err := h.wait(ctx, h.cfg.MigrateDelay/4); err != nil {
			return hypervisor.MigrationResult{}, err
		}
		if !r.waiting(addr, id) {
			// the target process went away (deleted, crashed)
			return hypervisor.MigrationResult{}, fmt.Errorf("sim: migrate out %s: the target at %q went away mid-transfer", id, addr)
		}
		if progress != nil {
			done := total * int64(i) / 4
			progress(hypervisor.MigrationProgress{Transferred: done, Remaining: total - done, Total: total})
		}
	}
	return d.finishMigration(id, addr, in, opts, total, false)
}

// migrateCold moves a stopped or crashed VM: one short simulated disk copy
// (MigrateDelay/4), then the VM is stopped on the target.
func (d *Driver) migrateCold(ctx context.Context, id, addr string, in incoming, opts hypervisor.MigrateOptions, disk int64, progress func(hypervisor.MigrationProgress)) (hypervisor.MigrationResult, error) {
	h := d.h
	if progress != nil {
		progress(hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageDisks, DiskTotal: disk})
	}
	if err := h.wait(ctx, h.cfg.MigrateDelay/4); err != nil {
		return hypervisor.MigrationResult{}, err
	}
	if progress != nil {
		progress(hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageDisks, DiskTransferred: disk, DiskTotal: disk})
	}
	return d.finishMigration(id, addr, in, opts, disk, true)
}

func (d *Driver) finishMigration(id, addr string, in incoming, opts hypervisor.MigrateOptions, total int64, cold bool) (hypervisor.MigrationResult, error) {
	h, r := d.h, d.h.cfg.Registry
	// The target must still wait for the VM (not deleted meanwhile).
	t := in.host
	t.mu.Lock()
	tv, ok := t.vms[id]
	t.mu.Unlock()
	if !ok || !tv.Incoming || !r.waiting(addr, id) {
		return hypervisor.MigrationResult{}, fmt.Errorf("sim: migrate out %s: the target at %q went away mid-transfer", id, addr)
	}
	h.mu.Lock()
	v, err := h.getLocked("migrate out", id)
	if err != nil {
		h.mu.Unlock()
		return hypervisor.MigrationResult{}, err
	}
	h.touch(v, h.cfg.Clock.Now())
	moved := *v
	delete(h.vms, id)
	saveErr := h.saveLocked()
	h.mu.Unlock()

	r.mu.Lock()
	delete(r.incoming, addr)
	r.mu.Unlock()

	t.mu.Lock()
	now := t.cfg.Clock.Now()
	state := moved.State
	moved.Incoming = false
	moved.Touched = now
	if cold { // never started on the target
		moved.State, moved.Pid, moved.StartedAt = hypervisor.StateStopped, 0, time.Time{}
	} else {
		t.startLocked(&moved, now)
		moved.State = state
	}
	t.vms[id] = &moved
	if err := t.saveLocked(); err != nil && saveErr == nil {
		saveErr = err
	}
	t.mu.Unlock()

	bw := opts.BandwidthBps
	if bw <= 0 {
		bw = defaultBandwidth
	}
	downtime := 20 * time.Millisecond
	if opts.DowntimeLimit > 0 && opts.DowntimeLimit < downtime {
		downtime = opts.DowntimeLimit
	}
	dur := time.Duration(float64(total) / float64(bw) * float64(time.Second))
	if cold {
		return hypervisor.MigrationResult{Total: max(dur, time.Millisecond), Bytes: total, DiskBytes: total,
			Stage: hypervisor.MigrationStageDisks, Cold: true}, saveErr
	}
	if dur < downtime {
		dur = downtime
	}
	return hypervisor.MigrationResult{Total: dur, Downtime: downtime, Bytes: total, RAMBytes: total}, saveErr
}

// waiting reports whether a target still waits at addr for id.
func (r *Registry) waiting(addr, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	in, ok := r.incoming[addr]
	return ok && in.id == id
}
