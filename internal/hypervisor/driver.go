// Package hypervisor defines the Driver interface through which a host
// agent runs virtual machines, the types it speaks, and (in hypervisortest)
// the acceptance suite that every driver must pass. Drivers live in
// subpackages: sim (in memory, virtual time) and qemu (real QEMU over QMP).
// This package imports only the standard library and internal/model.
package hypervisor

import (
	"context"
	"errors"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Sentinel errors; drivers wrap them so callers can use errors.Is.
var (
	ErrNotFound      = errors.New("hypervisor: vm not found")
	ErrExists        = errors.New("hypervisor: vm already exists")
	ErrBadState      = errors.New("hypervisor: operation not allowed in this state")
	ErrNeedsRestart  = errors.New("hypervisor: change needs a restart")
	ErrNoCapacity    = errors.New("hypervisor: not enough capacity on host")
	ErrUnsupported   = errors.New("hypervisor: not supported by this driver")
	ErrSnapshotFound = errors.New("hypervisor: snapshot not found")
	// ErrUnreachable: the VM's process runs but the driver cannot reach
	// it (its QEMU monitor does not answer). The driver leaves it running
	// and keeps trying; only Kill and Delete act on it meanwhile.
	ErrUnreachable = errors.New("hypervisor: vm unreachable")
	// ErrOutcomeUnknown: MigrateOut told the target to take over but
	// never heard back. The VM may run on the target; the source keeps
	// its copy paused (never resumed by the driver) until the caller
	// learns which side has it.
	ErrOutcomeUnknown = errors.New("hypervisor: migration outcome unknown after switchover")
)

// State is a VM's run state as the driver sees it.
type State string

// Run states.
const (
	StateStopped State = "stopped"
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateCrashed State = "crashed"
	// StateUnknown: the VM's process runs but the driver cannot tell its
	// state (Info.Reason says why). A driver never stops such a VM by
	// itself; it keeps trying to reach it, and the operator (or HA)
	// decides.
	StateUnknown State = "unknown"
)

// VMConfig is everything a driver needs to create a VM.
type VMConfig struct {
	// ID is unique on the host and stable for the VM's life
	// (vpool uses "<project>.<name>").
	ID      string       `json:"id"`
	Name    string       `json:"name"`
	Project string       `json:"project"`
	UID     string       `json:"uid,omitempty"`
	Spec    model.VMSpec `json:"spec"`
	// Image is the resolved boot image, if any.
	Image *Image `json:"image,omitempty"`
	// Ports say where each NIC of Spec.NICs plugs in on this host (same
	// index; shorter or empty: the driver's default bridge). The agent
	// fills them for NICs on vpool networks.
	Ports []NICPort `json:"ports,omitempty"`
	// AdoptEpoch is the control plane's owner epoch of the VM's disks
	// (model.DiskOwner) when HA restarted the VM on this host: disks of
	// the VM already on a shared pool, owned by the failed host, are then
	// adopted (their owner record rewritten to this host) instead of
	// refused. 0 for every other create.
	AdoptEpoch int64 `json:"adoptEpoch,omitempty"`
}

// NICPort is the host side of one NIC: the tap the driver creates, the
// bridge it joins and the MTU it takes. The agent names the tap, so the
// tap's security rules exist before the tap does.
type NICPort struct {
	Tap    string `json:"tap,omitempty"`
	Bridge string `json:"bridge,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
	// Address (CIDR), Gateway and DHCP say how the guest configures the
	// NIC: the cloud-init network config the driver writes agrees with
	// what the network's DHCP server hands out.
	Address string `json:"address,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	DHCP    bool   `json:"dhcp,omitempty"`
}

// Image is a boot image as the driver sees it.
type Image struct {
	Name    string `json:"name"`
	Kernel  string `json:"kernel,omitempty"`  // path to a kernel for direct boot
	Initrd  string `json:"initrd,omitempty"`  // path to an initrd
	Cmdline string `json:"cmdline,omitempty"` // kernel command line
	Disk    string `json:"disk,omitempty"`    // path to a raw or qcow2 base disk
	Format  string `json:"format,omitempty"`  // raw | qcow2
}

// Info describes one VM the driver knows, for listing and re-attach.
type Info struct {
	ID    string `json:"id"`
	State State  `json:"state"`
	// Reason explains StateUnknown (short, for the tenant: no host paths).
	Reason    string      `json:"reason,omitempty"`
	Pid       int         `json:"pid,omitempty"`
	VCPUs     int         `json:"vcpus"`
	Memory    model.Bytes `json:"memory"`
	StartedAt time.Time   `json:"startedAt,omitempty"`
	Config    VMConfig    `json:"config"`
	// Watchdog is the last firing of the guest watchdog in the VM's
	// current QEMU (nil: none).
	Watchdog *model.WatchdogFiring `json:"watchdog,omitempty"`
}

// Stats are cumulative counters of one VM.
type Stats struct {
	CPUTimeNs int64       `json:"cpuTimeNs"`
	Memory    model.Bytes `json:"memory"`
	DiskRead  int64       `json:"diskRead"`
	DiskWrite int64       `json:"diskWrite"`
	NetRx     int64       `json:"netRx"`
	NetTx     int64       `json:"netTx"`
	At        time.Time   `json:"at"`
}

// Inventory is what a host offers.
type Inventory struct {
	CPUs     int                    `json:"cpus"`
	Memory   model.Bytes            `json:"memory"`
	Disk     model.Bytes            `json:"disk"`
	Accel    string                 `json:"accel"` // kvm | tcg | sim
	Pools    []model.StoragePoolRef `json:"pools,omitempty"`
	CPUModel string                 `json:"cpuModel,omitempty"`
	Version  string                 `json:"version,omitempty"` // hypervisor version
	Machine  string                 `json:"machine,omitempty"` // versioned machine type VMs run with (qemu)
}

// SnapshotInfo describes one snapshot.
type SnapshotInfo struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
	Memory    bool      `json:"memory"`
}

// MigrateOptions tune an outgoing migration (a cold one uses only
// BandwidthBps, Timeout, TLSDir and Insecure). Zero values pick the
// driver's defaults (the QEMU driver's are in docs/migration-qemu.md).
type MigrateOptions struct {
	// DowntimeLimit is the longest pause allowed at switchover
	// (default 300ms). A driver may aim lower first and raise its target
	// up to this limit when pre-copy does not converge.
	DowntimeLimit time.Duration
	// BandwidthBps caps the stream at the start (bytes/s);
	// MaxBandwidthBps is the cap an escalation step raises it to.
	BandwidthBps    int64
	MaxBandwidthBps int64
	// AllowPostCopy lets the last escalation step switch to post-copy
	// (the VM opted in): the guest then runs on the target while its
	// remaining memory is pulled, and a failure after the switch loses it.
	AllowPostCopy bool
	// NoEscalation keeps the starting parameters for the whole migration
	// (pre-copy only; it fails when Timeout expires).
	NoEscalation bool
	// StallIterations is how many pre-copy passes in a row may leave the
	// remaining memory not shrinking before the next escalation step
	// (default 3); StageTimeout bounds each step (default 30s); Timeout
	// bounds the whole migration (default 10m).
	StallIterations int
	StageTimeout    time.Duration
	Timeout         time.Duration
	// TLSDir overrides the driver's migration TLS material for this call
	// (QEMU's layout: ca-cert.pem, client-cert.pem, client-key.pem, ...).
	TLSDir string
	// Insecure allows a plain-TCP stream to a target that offers no TLS
	// even though this host has TLS material.
	Insecure bool
}

// Migration stages, reported in MigrationProgress.Stage and
// MigrationResult.Stage, in escalation order.
const (
	MigrationStageDisks        = "disks"         // local disks mirror to the target
	MigrationStagePreCopy      = "precopy"       // memory pre-copy, starting parameters
	MigrationStageDowntime     = "downtime"      // escalation 1: downtime target raised to the limit
	MigrationStageBandwidth    = "bandwidth"     // escalation 2: bandwidth raised
	MigrationStageAutoConverge = "auto-converge" // escalation 3: guest vCPUs throttled
	MigrationStagePostCopy     = "postcopy"      // escalation 4: guest runs on the target
	MigrationStageSwitchover   = "switchover"    // source paused, target resuming
)

// MigrationProgress is reported while memory moves.
type MigrationProgress struct {
	Transferred      int64
	Remaining        int64
	Total            int64
	DirtyRate        int64 // bytes/s
	ExpectedDowntime time.Duration
	// Stage is one of the MigrationStage constants; Note says why the
	// stage was entered (set on the first report of a stage).
	Stage string
	Note  string
	// Iteration counts pre-copy passes (dirty bitmap syncs); Bandwidth is
	// the measured stream rate (bytes/s); Throttle the guest vCPU
	// throttle in percent (auto-converge); DiskTransferred/DiskTotal the
	// disk mirrors' progress in bytes.
	Iteration       int64
	Bandwidth       int64
	Throttle        int
	DiskTransferred int64
	DiskTotal       int64
	Elapsed         time.Duration
}

// How MigrationResult.GuestGap was measured.
const (
	GapByGuestTicks = "guest-ticks" // the guest's own periodic output (the test guest)
	GapByQEMUPause  = "qemu-pause"  // QEMU's Pause: no figure from inside the guest
)

// MigrationResult is the outcome of a finished migration.
type MigrationResult struct {
	Total    time.Duration
	Downtime time.Duration // as the hypervisor measured it
	Bytes    int64         // RAMBytes + DiskBytes
	// RAMBytes and DiskBytes split Bytes; DiskBytes is 0 on shared storage.
	RAMBytes  int64
	DiskBytes int64
	// GuestGap is the guest-visible pause, the migration's SLO: the
	// longest interruption the guest itself shows, measured as
	// GuestGapBy says (one of the GapBy constants): from the guest's own
	// output (the test guest's ticks), else QEMU's Pause. 0 when unknown.
	GuestGap   time.Duration
	GuestGapBy string
	// ConsoleGap (guest-ticks only) is the longest time the hosts saw no
	// new line of the guest's periodic output: GuestGap plus the lag of
	// the guest's serial console, which under load held back lines the
	// guest had written on time for seconds. 0 when unknown.
	ConsoleGap time.Duration
	// Pause is how long the guest's vCPUs stood still as QEMU saw it:
	// from the source stopping them to the target resuming them (QMP
	// STOP and RESUME events, on one clock). Unlike Downtime it includes
	// the switchover after the stream (disk mirrors, the target's
	// resume; in post-copy until the switch). 0 when not measured (cold).
	Pause time.Duration
	// Stage is the last stage reached (PostCopy when it switched);
	// Notes lists every escalation with its reason.
	Stage    string
	Notes    []string
	PostCopy bool
	TLS      bool
	// Cold: the VM was not running (stopped or crashed) and moved without
	// memory: only disks were copied (Downtime 0, Bytes = DiskBytes).
	Cold bool
	// SharedDisks names the disks that stayed on shared storage.
	SharedDisks []string
}

// Lifecycle creates, runs and removes VMs.
type Lifecycle interface {
	// Create makes the VM's disks and records, without starting it.
	// A failed Create leaves nothing behind.
	Create(ctx context.Context, cfg VMConfig) error
	Start(ctx context.Context, id string) error
	// Stop asks the guest to power off, waits up to timeout, then kills.
	Stop(ctx context.Context, id string, timeout time.Duration) error
	Kill(ctx context.Context, id string) error
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	// Delete removes the VM (stopping it first) and everything it owns.
	Delete(ctx context.Context, id string) error
	// Resize changes vCPUs and memory live where possible; it returns
	// ErrNeedsRestart (changing nothing) when the change needs a restart.
	Resize(ctx context.Context, id string, vcpus int, memory model.Bytes) error
	// SetControls applies resource controls (shares, limits, I/O).
	SetControls(ctx context.Context, id string, c model.Controls) error
}

// Observer reports on VMs.
type Observer interface {
	Inventory(ctx context.Context) (Inventory, error)
	Stats(ctx context.Context, id string) (Stats, error)
	// List returns every VM the driver has, including ones created by an
	// earlier process of the agent: this is how an agent re-attaches.
	List(ctx context.Context) ([]Info, error)
}

// Snapshotter manages snapshots.
type Snapshotter interface {
	Snapshot(ctx context.Context, id, name string, withMemory bool) error
	RevertSnapshot(ctx context.Context, id, name string) error
	DeleteSnapshot(ctx context.Context, id, name string) error
	Snapshots(ctx context.Context, id string) ([]SnapshotInfo, error)
}

// Migrator moves VMs between hosts: running (or paused) ones live, stopped
// (or crashed) ones cold.
//
// The target calls MigrateIn(ctx, cfg) and hands the address to the
// source, which calls MigrateOut(ctx, id, addr, opts, progress). The target
// does not know in advance whether the move is live or cold: the source
// decides from the VM's state and tells the target.
//
// Live (the VM runs or is paused): memory and local disks move while the
// guest runs; on success the VM is gone from the source and runs (or stays
// paused) on the target.
//
// Cold (the VM is stopped or crashed): the contents of its local disks are
// copied to the target, disks on shared storage are adopted by the target
// (the same ownership rules as live), no memory moves. On success the VM
// is gone from the source and the target lists it as stopped (never
// started). The result has Cold set, Downtime 0, DiskBytes = Bytes = the
// bytes copied, Total = wall time, TLS as for live; progress reports Stage
// MigrationStageDisks with DiskTransferred/DiskTotal.
//
// Failure (both modes): MigrateOut returns an error and the source VM stays
// as it was (running / paused / stopped / crashed), except as the driver
// documents for an unknown outcome (ErrOutcomeUnknown). The target drops
// its copy by itself when the source aborts or vanishes; the caller still
// calls Delete on the target after a failed MigrateOut (ErrNotFound means
// it is already gone) — that is always safe and never touches the source's
// disks on shared storage.
type Migrator interface {
	// MigrateIn prepares this host to receive cfg and returns the address
	// the source must send to. The guest never runs here before the
	// migration completes.
	MigrateIn(ctx context.Context, cfg VMConfig) (addr string, err error)
	// MigrateOut sends the VM to addr, live or cold by its state; on
	// success the VM is gone here.
	MigrateOut(ctx context.Context, id, addr string, opts MigrateOptions, progress func(MigrationProgress)) (MigrationResult, error)
}

// Driver is a hypervisor: everything an agent needs from one.
type Driver interface {
	Name() string
	Lifecycle
	Observer
	Snapshotter
	Migrator
}
