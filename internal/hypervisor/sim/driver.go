package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Driver is a hypervisor.Driver viewing one Host. Several Drivers may view
// the same Host; dropping one changes nothing on the Host.
type Driver struct {
	h *Host
	// sessions holds the VMs with an open backup or restore session of
	// this Driver (backup.go); a new Driver (an agent restart) starts
	// with none, as the QEMU driver does.
	sessions sync.Map
}

var _ hypervisor.Driver = (*Driver)(nil)

// New returns a Driver viewing h (the same as h.Driver()).
func New(h *Host) *Driver { return &Driver{h: h} }

// Host returns the simulated host behind the driver.
func (d *Driver) Host() *Host { return d.h }

// Name returns "sim".
func (d *Driver) Name() string { return "sim" }

// Create records the VM, stopped. Its disk counts against the host's disk.
func (d *Driver) Create(ctx context.Context, cfg hypervisor.VMConfig) error {
	h := d.h
	if err := validConfig(cfg); err != nil {
		return err
	}
	if err := h.fail("create", cfg.ID); err != nil {
		return err
	}
	if err := h.wait(ctx, h.cfg.CreateDelay); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.vms[cfg.ID]; ok {
		return fmt.Errorf("sim: create %s: %w", cfg.ID, hypervisor.ErrExists)
	}
	if err := h.fitsLocked(cfg.ID, model.Resources{Disk: cfg.Spec.DiskSize()}); err != nil {
		return err
	}
	h.vms[cfg.ID] = &vm{Config: copyConfig(cfg), State: hypervisor.StateStopped, Touched: h.cfg.Clock.Now()}
	return h.saveLocked()
}

// Start boots a stopped or crashed VM; starting a running VM is a no-op.
func (d *Driver) Start(ctx context.Context, id string) error {
	h := d.h
	if err := h.fail("start", id); err != nil {
		return err
	}
	h.mu.Lock()
	v, err := h.getLocked("start", id)
	if err == nil && v.State == hypervisor.StatePaused {
		err = fmt.Errorf("sim: start %s: vm is paused (resume it): %w", id, hypervisor.ErrBadState)
	}
	running := err == nil && v.State == hypervisor.StateRunning
	h.mu.Unlock()
	if err != nil || running {
		return err
	}
	if err := h.wait(ctx, h.cfg.BootDelay); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err = h.getLocked("start", id)
	if err != nil {
		return err
	}
	if v.State == hypervisor.StateRunning {
		return nil
	}
	if err := h.fitsLocked(id, v.Config.Spec.Demand()); err != nil {
		return err
	}
	h.startLocked(v, h.cfg.Clock.Now())
	return h.saveLocked()
}

// Stop powers the VM off after StopDelay (capped by timeout); stopping a
// stopped VM is a no-op.
func (d *Driver) Stop(ctx context.Context, id string, timeout time.Duration) error {
	h := d.h
	if err := h.fail("stop", id); err != nil {
		return err
	}
	h.mu.Lock()
	v, err := h.getLocked("stop", id)
	stopped := err == nil && (v.State == hypervisor.StateStopped || v.State == hypervisor.StateCrashed)
	h.mu.Unlock()
	if err != nil || stopped {
		return err
	}
	delay := h.cfg.StopDelay
	if timeout > 0 && delay > timeout {
		delay = timeout
	}
	if err := h.wait(ctx, delay); err != nil {
		return err
	}
	return d.powerOff("stop", id, hypervisor.StateStopped)
}

// Kill powers the VM off at once.
func (d *Driver) Kill(_ context.Context, id string) error {
	if err := d.h.fail("kill", id); err != nil {
		return err
	}
	return d.powerOff("kill", id, hypervisor.StateStopped)
}

func (d *Driver) powerOff(op, id string, to hypervisor.State) error {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked(op, id)
	if err != nil {
		return err
	}
	h.touch(v, h.cfg.Clock.Now())
	v.State = to
	v.Pid = 0
	v.StartedAt = time.Time{}
	return h.saveLocked()
}

// Pause freezes a running VM.
func (d *Driver) Pause(_ context.Context, id string) error {
	return d.transition("pause", id, hypervisor.StateRunning, hypervisor.StatePaused)
}

// Resume thaws a paused VM.
func (d *Driver) Resume(_ context.Context, id string) error {
	return d.transition("resume", id, hypervisor.StatePaused, hypervisor.StateRunning)
}

func (d *Driver) transition(op, id string, from, to hypervisor.State) error {
	h := d.h
	if err := h.fail(op, id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked(op, id)
	if err != nil {
		return err
	}
	if v.State == to {
		return nil
	}
	if v.State != from {
		return fmt.Errorf("sim: %s %s: vm is %s: %w", op, id, v.State, hypervisor.ErrBadState)
	}
	h.touch(v, h.cfg.Clock.Now())
	v.State = to
	return h.saveLocked()
}

// Delete removes the VM, its snapshots and any incoming reservation.
func (d *Driver) Delete(_ context.Context, id string) error {
	h := d.h
	if err := h.fail("delete", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.vms[id]; !ok {
		return fmt.Errorf("sim: delete %s: %w", id, hypervisor.ErrNotFound)
	}
	delete(h.vms, id)
	if h.cfg.Registry != nil {
		h.cfg.Registry.dropIncoming(h, id)
	}
	h.dropListenerLocked(id)
	return h.saveLocked()
}

// Resize changes vCPUs and memory. A stopped VM takes any size that fits
// its host; a running VM grows live when the host has room and needs a
// restart to shrink (unless Config.LiveShrink).
func (d *Driver) Resize(_ context.Context, id string, vcpus int, memory model.Bytes) error {
	h := d.h
	if err := h.fail("resize", id); err != nil {
		return err
	}
	if vcpus < 1 || vcpus > model.MaxVCPUs || memory < model.MiB || memory > model.MaxMemory {
		return fmt.Errorf("sim: resize %s: %d vCPUs / %s is out of range", id, vcpus, memory)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("resize", id)
	if err != nil {
		return err
	}
	live := v.State == hypervisor.StateRunning || v.State == hypervisor.StatePaused
	if live {
		shrink := vcpus < v.Config.Spec.VCPUs || memory < v.Config.Spec.Memory
		if shrink && !h.cfg.LiveShrink {
			return fmt.Errorf("sim: resize %s: shrinking a running vm: %w", id, hypervisor.ErrNeedsRestart)
		}
		want := model.Resources{CPUs: vcpus, Memory: memory, Disk: v.Config.Spec.DiskSize()}
		if err := h.fitsLocked(id, want); err != nil {
			return err
		}
		h.touch(v, h.cfg.Clock.Now())
	}
	v.Config.Spec.VCPUs = vcpus
	v.Config.Spec.Memory = memory
	return h.saveLocked()
}

// SetControls records resource controls; the simulated CPU use of the VM
// is capped by a CPU limit.
func (d *Driver) SetControls(_ context.Context, id string, c model.Controls) error {
	h := d.h
	if err := h.fail("controls", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("controls", id)
	if err != nil {
		return err
	}
	h.touch(v, h.cfg.Clock.Now())
	v.Config.Spec.Controls = c
	return h.saveLocked()
}

// Inventory reports the configured capacity.
func (d *Driver) Inventory(context.Context) (hypervisor.Inventory, error) {
	c := d.h.cfg
	return hypervisor.Inventory{
		CPUs:     c.CPUs,
		Memory:   c.Memory,
		Disk:     c.Disk,
		Accel:    "sim",
		Pools:    append([]model.StoragePoolRef(nil), c.Pools...),
		CPUModel: "sim-cpu",
		Version:  "sim-1",
	}, nil
}

// Stats returns the VM's counters: CPU time grows with the clock while the
// VM runs, at its Usage fraction of its vCPUs (capped by a CPU limit); I/O
// counters grow with CPU time.
func (d *Driver) Stats(_ context.Context, id string) (hypervisor.Stats, error) {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("stats", id)
	if err != nil {
		return hypervisor.Stats{}, err
	}
	now := h.cfg.Clock.Now()
	h.touch(v, now)
	cpu := int64(v.CPUTimeNs)
	u := h.cfg.Usage(id, now)
	mem := model.Bytes(0)
	if v.State == hypervisor.StateRunning || v.State == hypervisor.StatePaused {
		frac := math.Min(1, 0.25+0.5*u)
		mem = model.Bytes(float64(v.Config.Spec.Memory)*frac) / model.MiB * model.MiB
	}
	return hypervisor.Stats{
		CPUTimeNs: cpu,
		Memory:    mem,
		DiskRead:  cpu / 100,
		DiskWrite: cpu / 200,
		NetRx:     cpu / 50,
		NetTx:     cpu / 80,
		At:        now,
	}, nil
}

// List returns every VM of the host, sorted by ID.
func (d *Driver) List(context.Context) ([]hypervisor.Info, error) { return d.h.list(), nil }

var _ hypervisor.Fencer = (*Driver)(nil)

// KillAll powers off every running or paused VM at once, with one state
// write: a self-fence never shows a state where some of them still run.
func (d *Driver) KillAll(context.Context) ([]hypervisor.Info, error) {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.cfg.Clock.Now()
	var out []hypervisor.Info
	var errs []error
	for _, v := range h.vms {
		if v.Incoming || (v.State != hypervisor.StateRunning && v.State != hypervisor.StatePaused) {
			continue
		}
		if err := h.fail("kill", v.Config.ID); err != nil {
			errs = append(errs, err) // left running: the caller tries again
			continue
		}
		out = append(out, h.info(v))
		h.touch(v, now)
		v.State = hypervisor.StateStopped
		v.Pid = 0
		v.StartedAt = time.Time{}
	}
	if len(out) > 0 {
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		errs = append(errs, h.saveLocked())
	}
	return out, errors.Join(errs...)
}
