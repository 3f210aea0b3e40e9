// Package sim is the simulated hypervisor: a host in memory, deterministic,
// on an injectable clock, with a configurable capacity that it enforces
// (ErrNoCapacity) and configurable delays (zero by default). It is light
// enough for hundreds of simulated hosts in one process.
//
// The VM "processes" live in a Host; a Driver is only a view of a Host.
// Dropping a Driver and making a new one on the same Host is what an agent
// restart looks like: the VMs keep running and the new Driver lists them.
// With Config.StateFile set, the Host also persists its VMs to a file, so a
// new process that opens the same file finds them again (as real QEMU
// processes outlive a killed agent). Hosts of one process migrate VMs
// through a shared Registry; hosts of different processes (sim agents run
// as `vpool agent`) over TCP on Config.MigrationHost (netmigrate.go).
//
// This package imports only the standard library, internal/model and
// internal/hypervisor; it must not import the store, the server or QEMU.
package sim

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Config configures a simulated host. Zero fields take the defaults noted.
type Config struct {
	Name   string      // default "sim"
	CPUs   int         // physical CPUs; default 8
	Memory model.Bytes // default 32GiB
	Disk   model.Bytes // default 1TiB
	// CPURatio bounds the vCPUs of running VMs to CPUs × CPURatio
	// (default 16); MemoryRatio bounds their memory to Memory × MemoryRatio
	// (default 1). Disk of created VMs is bounded by Disk.
	CPURatio    float64
	MemoryRatio float64
	Clock       Clock // default RealClock
	// Delays of the simulated work, waited on Clock.
	CreateDelay  time.Duration
	BootDelay    time.Duration
	StopDelay    time.Duration // capped by the Stop timeout
	MigrateDelay time.Duration
	// Usage is the busy fraction (0..1) of a VM's vCPUs at a time. Default:
	// a constant per VM between 0.05 and 0.60 derived from its ID.
	Usage func(id string, at time.Time) float64
	// LiveShrink lets Resize shrink a running VM; without it a shrink
	// wraps ErrNeedsRestart (growth is always live when it fits).
	LiveShrink bool
	// Registry connects hosts for migration; nil makes migration
	// ErrUnsupported, unless MigrationHost is set.
	Registry *Registry
	// MigrationHost, without a Registry, makes the host migrate to and
	// from hosts of other processes over TCP, listening on this address
	// for incoming VMs (netmigrate.go).
	MigrationHost string
	// StateFile, when set, is where the host persists its VMs after every
	// change; NewHost loads it.
	StateFile string
	Pools     []model.StoragePoolRef
	// Fail, when set, is asked before every operation ("create", "start",
	// "stop", "kill", "pause", "resume", "delete", "resize", "controls",
	// "snapshot", "revert", "migrate-in", "migrate-out") and a non-nil
	// error fails it. Tests inject faults with it.
	Fail func(op, id string) error
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name = "sim"
	}
	if c.CPUs == 0 {
		c.CPUs = 8
	}
	if c.Memory == 0 {
		c.Memory = 32 * model.GiB
	}
	if c.Disk == 0 {
		c.Disk = model.TiB
	}
	if c.CPURatio == 0 {
		c.CPURatio = 16
	}
	if c.MemoryRatio == 0 {
		c.MemoryRatio = 1
	}
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	if c.Usage == nil {
		c.Usage = DefaultUsage
	}
	return c
}

// DefaultUsage is a constant busy fraction per VM, 0.05 to 0.60, derived
// from the VM's ID so that runs are reproducible.
func DefaultUsage(id string, _ time.Time) float64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return 0.05 + float64(h.Sum32()%56)/100
}

// ConstantUsage returns a Usage function giving every VM the fraction f.
func ConstantUsage(f float64) func(string, time.Time) float64 {
	return func(string, time.Time) float64 { return f }
}

type snapshot struct {
	Name      string           `json:"name"`
	CreatedAt time.Time        `json:"createdAt"`
	Memory    bool             `json:"memory"`
	State     hypervisor.State `json:"state"`
}

// vm is one simulated VM "process" and its records.
type vm struct {
	Config    hypervisor.VMConfig `json:"config"`
	State     hypervisor.State    `json:"state"`
	Pid       int                 `json:"pid,omitempty"`
	StartedAt time.Time           `json:"startedAt,omitempty"`
	// CPUTimeNs is accumulated up to Touched.
	CPUTimeNs float64    `json:"cpuTimeNs"`
	Touched   time.Time  `json:"touched"`
	Snapshots []snapshot `json:"snapshots,omitempty"`
	// Disks holds the content written to the VM's disks and their change
	// tracking (backup.go); nil until something is written.
	Disks map[string]*diskData `json:"diskData,omitempty"`
	// Incoming marks a reservation for an incoming migration: counted
	// against capacity, not listed.
	Incoming bool `json:"incoming,omitempty"`
}

// Host is one simulated machine: the VMs and their "processes". It is
// safe for concurrent use by several Drivers.
type Host struct {
	cfg     Config
	mu      sync.Mutex
	vms     map[string]*vm
	nextPid int
	// listeners wait for the senders of incoming VMs (netmigrate.go).
	listeners map[string]*netIncoming
}

// NewHost returns a simulated host. With cfg.StateFile set it loads the
// VMs persisted there, running ones still running.
func NewHost(cfg Config) (*Host, error) {
	h := &Host{cfg: cfg.withDefaults(), vms: map[string]*vm{}, nextPid: 1000}
	if h.cfg.StateFile != "" {
		if err := h.load(); err != nil {
			return nil, err
		}
	}
	if h.cfg.Registry != nil {
		h.cfg.Registry.add(h)
	}
	return h, nil
}

// MustHost is NewHost for hosts without a state file, which cannot fail.
func MustHost(cfg Config) *Host {
	h, err := NewHost(cfg)
	if err != nil {
		panic(err)
	}
	return h
}

// Name returns the host's name.
func (h *Host) Name() string { return h.cfg.Name }

// Driver returns a new Driver viewing this host.
func (h *Host) Driver() *Driver { return &Driver{h: h} }

// Crash makes a running VM crash, as a guest panic or an OOM kill would.
func (h *Host) Crash(id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.vms[id]
	if !ok || v.Incoming {
		return fmt.Errorf("sim: crash %s: %w", id, hypervisor.ErrNotFound)
	}
	h.touch(v, h.cfg.Clock.Now())
	v.State = hypervisor.StateCrashed
	v.Pid = 0
	return h.saveLocked()
}

// Allocated returns what the host's VMs hold: vCPUs and memory of running
// or paused VMs, disk of all VMs.
func (h *Host) Allocated() model.Resources {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.usedLocked("")
}

// usedLocked sums what VMs other than except hold.
func (h *Host) usedLocked(except string) model.Resources {
	var r model.Resources
	for id, v := range h.vms {
		if id == except {
			continue
		}
		r.Disk += v.Config.Spec.DiskSize()
		if v.Incoming || v.State == hypervisor.StateRunning || v.State == hypervisor.StatePaused {
			r.CPUs += v.Config.Spec.VCPUs
			r.Memory += v.Config.Spec.Memory
		}
	}
	return r
}

// fitsLocked checks that a VM (id) holding want fits next to the others;
// callers pass zero CPUs and memory for a VM that will not run.
func (h *Host) fitsLocked(id string, want model.Resources) error {
	used := h.usedLocked(id)
	maxCPU := int(float64(h.cfg.CPUs) * h.cfg.CPURatio)
	maxMem := model.Bytes(float64(h.cfg.Memory) * h.cfg.MemoryRatio)
	switch {
	case used.CPUs+want.CPUs > maxCPU:
		return fmt.Errorf("sim: %s needs %d vCPUs, host %s has room for %d: %w", id, want.CPUs, h.cfg.Name, maxCPU-used.CPUs, hypervisor.ErrNoCapacity)
	case used.Memory+want.Memory > maxMem:
		return fmt.Errorf("sim: %s needs %s memory, host %s has %s free: %w", id, want.Memory, h.cfg.Name, maxMem-used.Memory, hypervisor.ErrNoCapacity)
	case used.Disk+want.Disk > h.cfg.Disk:
		return fmt.Errorf("sim: %s needs %s disk, host %s has %s free: %w", id, want.Disk, h.cfg.Name, h.cfg.Disk-used.Disk, hypervisor.ErrNoCapacity)
	}
	return nil
}

// touch accumulates CPU time of v up to now.
func (h *Host) touch(v *vm, now time.Time) {
	if v.State == hypervisor.StateRunning && now.After(v.Touched) {
		dt := float64(now.Sub(v.Touched))
		u := h.cfg.Usage(v.Config.ID, v.Touched)
		if u < 0 {
			u = 0
		}
		if u > 1 {
			u = 1
		}
		cpus := u * float64(v.Config.Spec.VCPUs)
		if lim := v.Config.Spec.Controls.CPULimit; lim > 0 && cpus > float64(lim)/1000 {
			cpus = float64(lim) / 1000
		}
		v.CPUTimeNs += dt * cpus
	}
	if now.After(v.Touched) {
		v.Touched = now
	}
}

// get returns a listed (not incoming) VM or ErrNotFound.
func (h *Host) getLocked(op, id string) (*vm, error) {
	v, ok := h.vms[id]
	if !ok || v.Incoming {
		return nil, fmt.Errorf("sim: %s %s: %w", op, id, hypervisor.ErrNotFound)
	}
	return v, nil
}

func (h *Host) fail(op, id string) error {
	if h.cfg.Fail == nil {
		return nil
	}
	if err := h.cfg.Fail(op, id); err != nil {
		return fmt.Errorf("sim: %s %s: %w", op, id, err)
	}
	return nil
}

func (h *Host) info(v *vm) hypervisor.Info {
	return hypervisor.Info{
		ID:        v.Config.ID,
		State:     v.State,
		Pid:       v.Pid,
		VCPUs:     v.Config.Spec.VCPUs,
		Memory:    v.Config.Spec.Memory,
		StartedAt: v.StartedAt,
		Config:    copyConfig(v.Config),
	}
}

func (h *Host) list() []hypervisor.Info {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]hypervisor.Info, 0, len(h.vms))
	for _, v := range h.vms {
		if !v.Incoming {
			out = append(out, h.info(v))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// startLocked makes v a running process.
func (h *Host) startLocked(v *vm, now time.Time) {
	h.nextPid++
	v.Pid = h.nextPid
	v.State = hypervisor.StateRunning
	v.StartedAt = now
	v.Touched = now
}

func copyConfig(c hypervisor.VMConfig) hypervisor.VMConfig {
	out := c
	out.Spec.Disks = append([]model.Disk(nil), c.Spec.Disks...)
	out.Spec.NICs = append([]model.NIC(nil), c.Spec.NICs...)
	out.Spec.Labels = copyMap(c.Spec.Labels)
	out.Spec.Placement.RequiredLabels = copyMap(c.Spec.Placement.RequiredLabels)
	out.Spec.Placement.PreferredLabels = copyMap(c.Spec.Placement.PreferredLabels)
	if c.Image != nil {
		im := *c.Image
		out.Image = &im
	}
	return out
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func validConfig(cfg hypervisor.VMConfig) error {
	switch {
	case cfg.ID == "" || strings.ContainsAny(cfg.ID, "/ \t\n"):
		return fmt.Errorf("sim: bad vm id %q", cfg.ID)
	case cfg.Spec.VCPUs < 1 || cfg.Spec.VCPUs > model.MaxVCPUs:
		return fmt.Errorf("sim: create %s: %d vCPUs is out of range 1..%d", cfg.ID, cfg.Spec.VCPUs, model.MaxVCPUs)
	case cfg.Spec.Memory < model.MiB || cfg.Spec.Memory > model.MaxMemory:
		return fmt.Errorf("sim: create %s: memory %s is out of range", cfg.ID, cfg.Spec.Memory)
	}
	for _, d := range cfg.Spec.Disks {
		if d.Size < 0 {
			return fmt.Errorf("sim: create %s: disk %s has negative size", cfg.ID, d.Name)
		}
	}
	return nil
}

// wait sleeps a configured delay outside the lock.
func (h *Host) wait(ctx context.Context, d time.Duration) error {
	if err := sleep(ctx, h.cfg.Clock, d); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// StateFile returns the file the host persists to ("" for none).
func (h *Host) StateFile() string { return h.cfg.StateFile }
