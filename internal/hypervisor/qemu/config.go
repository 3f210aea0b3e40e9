package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// Clock is the driver's time source (sim.RealClock satisfies it).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Network modes.
const (
	NetAuto   = "auto"   // a tap on Bridge when one can be made, else user
	NetBridge = "bridge" // a tap on Bridge; failing that is an error
	NetUser   = "user"   // QEMU user-mode networking (no root needed)
	NetNone   = "none"   // no NIC at all
)

// Config configures a Driver. StateDir is required; the rest has defaults.
type Config struct {
	// StateDir holds vms/<id>/ (record, sockets, logs, pid file) and keys/.
	StateDir string
	// Pools maps storage pool names to directories. A pool named
	// "default" is added at StateDir/pools/default when absent. A disk
	// with no pool goes to "default".
	Pools map[string]string
	// Bridge is the per-host Linux bridge the VMs' taps join
	// (default "vpool0").
	Bridge string
	// Network is NetAuto (default), NetBridge, NetUser or NetNone.
	Network string
	// Accel is "auto" (default: KVM when /dev/kvm is usable, else TCG),
	// "kvm" or "tcg". VPOOL_ACCEL in the environment overrides "auto".
	Accel string
	// QEMU and QEMUImg are the binaries (default qemu-system-x86_64 and
	// qemu-img, looked up in PATH).
	QEMU    string
	QEMUImg string
	// Machine is the machine type (default q35); an alias is resolved to
	// the versioned type this QEMU gives it (machine.go).
	Machine string
	// CPUModel is the guest CPU model: the cluster's baseline, the same
	// on every host, so that running VMs can move between hosts of
	// different CPUs (e.g. "Haswell-noTSX", "EPYC-Rome", "qemu64"). Empty:
	// "host" under KVM (fastest, but a VM only moves between identical
	// CPUs) and QEMU's default (qemu64) under TCG. The host reports it as
	// its CPU model, which the migration pre-checks compare.
	CPUModel string
	// MaxVCPUs is the vCPU ceiling for hot-add (-smp maxcpus); a VM gets
	// max(its vCPUs, MaxVCPUs). Default 8.
	MaxVCPUs int
	// MemorySlots and MaxMemoryFactor size memory hot-add: a VM of M
	// bytes boots with maxmem = M × MaxMemoryFactor and that many DIMM
	// slots. Defaults 4 and 4; MemorySlots < 0 disables DIMM hot-add.
	MemorySlots     int
	MaxMemoryFactor int
	// TCGCache caps TCG's translation cache per VM (default 64MiB;
	// QEMU's own default of 1GiB would dominate a small guest's RSS).
	TCGCache model.Bytes
	// HostReserve is host memory kept out of capacity (default 1GiB);
	// VMOverhead is what each VM's QEMU costs beyond guest memory in the
	// capacity rule (default 32MiB, plus TCGCache under TCG).
	HostReserve model.Bytes
	VMOverhead  model.Bytes
	// RunDir holds sockets whose path under StateDir would exceed the
	// unix socket limit (default: os.TempDir()/vpool-run-<uid>).
	RunDir string
	// LUKSIterTime is the key-derivation time of new LUKS volumes
	// (QEMU's default, 2 s, when zero); every open of the volume costs
	// about as much. Tests lower it.
	LUKSIterTime time.Duration
	// Keys keeps LUKS volume keys (default: a FileKeys under
	// StateDir/keys, wrapped by a master key kept there).
	Keys KeyStore
	// Cgroups enables resource controls through cgroups (default on
	// when a writable cgroup hierarchy is found). Set NoCgroups to skip.
	NoCgroups bool
	// NoMountNamespace starts QEMU in the host's mount namespace, as
	// before vmns.go: for hosts where the agent, root, lacks
	// CAP_SYS_ADMIN (some containers). Otherwise every per-VM-user QEMU
	// gets a mount namespace of its own (vmns.go) and a start fails
	// when it cannot be made.
	NoMountNamespace bool
	// HideFromVMs are more directories QEMU must not see (an empty
	// tmpfs over each in its mount namespace), beside the defaults of
	// vmns.go: the agent passes its own state dir (its keys and
	// certificates). What QEMU needs below one stays reachable.
	HideFromVMs []string
	// VMsCPUShares is the CPU weight of the cgroup that holds every VM
	// against the host's other processes, in cgroup v1 shares (1024 = one
	// busy process; v2's cpu.weight is mapped from it). Default 1024 ×
	// host CPUs: the VMs together weigh one busy process per CPU.
	VMsCPUShares int
	// CgroupName names the VMs' group under the agent's own cgroup
	// (default "vpool"). Tests that run two drivers as two hosts give
	// them a group of their own, so that no other process's driver
	// resets its weight.
	CgroupName string
	// MigrationCPUBoost multiplies the CPU weight of the VMs' group and of
	// the migrating VM's QEMU while a migration needs the CPU: on the
	// source for the memory stream, on the target from the incoming
	// stream until 3 s after the guest resumes (migrate_boost.go;
	// without cgroups the QEMU's nice value is lowered instead). Default
	// 8; 1 turns the boost off.
	MigrationCPUBoost int
	// MigrationMultifdChannels is how many connections carry an outgoing
	// migration's memory stream when the migration does not say
	// (MigrateOptions.MultifdChannels 0) and the VM does not allow
	// post-copy, which QEMU cannot combine with multifd. Default 2 on a
	// host with 2 or more CPUs (each channel encrypts and sends on its
	// own thread: docs/migration-slo.md, "multifd and compression"), else
	// 1; 1 turns multifd off.
	MigrationMultifdChannels int
	// NoGuestAgent starts VMs without the guest-agent channel (qga.go):
	// the device set of VMs started by vpool versions before it.
	NoGuestAgent bool
	// MigrationTLSDir holds this host's migration TLS material in QEMU's
	// layout (ca-cert.pem from the cluster CA, server-cert.pem,
	// server-key.pem, client-cert.pem, client-key.pem). When set, incoming
	// migrations and their disk mirrors require TLS and outgoing ones use
	// it (see docs/migration-qemu.md). Empty: plain TCP.
	MigrationTLSDir string
	// MigrationHost is the address this host listens on and advertises
	// for incoming migrations (default 127.0.0.1).
	MigrationHost string
	// HostID names this host in the owner records of its disk directories
	// (owner.go): unique in the cluster (the agent passes its host name),
	// the same across restarts. Empty: an id made up once and kept in
	// StateDir/host-id.
	HostID string
	// VMUIDBase and VMUIDCount are the range of per-VM users: each VM's
	// QEMU runs as a uid (and gid) of its own from it (vmuser.go,
	// uidalloc.go). Defaults 2000000 and 65536: above the usual
	// subordinate-id ranges of /etc/subuid; the range must not hold
	// users of the host.
	VMUIDBase  uint32
	VMUIDCount uint32
	// VMUIDRegistry is the host-wide directory that records which uid of
	// the range each VM holds, shared by every driver on the machine
	// (default /run/vpool/vm-uids).
	VMUIDRegistry string
	// QMPTimeout bounds every QMP command whose context has no deadline,
	// and every clean-up after a failure (default 1m): a stuck QEMU can
	// hold its VM's lock no longer than that per step.
	QMPTimeout time.Duration
	Logger     *slog.Logger
	Clock      Clock
}

// Driver is the QEMU hypervisor.Driver. Create it with New.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	clock  Clock
	accel  string
	net    string // resolved network mode: bridge, user or none
	cg     *cgroups
	keys   KeyStore
	ctx    context.Context // lives as long as the driver; watchers use it
	cancel context.CancelFunc

	mu  sync.Mutex
	vms map[string]*vm

	bridgeUp atomic.Bool

	// migTLS is the migration TLS directory in use: Config.MigrationTLSDir,
	// or StateDir/migration-tls once SetMigrationIdentity wrote it.
	migTLS atomic.Pointer[string]

	// streamBw is what one migration stream of this host last moved
	// (bytes/s; 0: not measured yet): the choice of multifd channels
	// weighs a guest's dirty rate against it (migrate_multifd.go).
	streamBw atomic.Int64

	// backups holds the ids of VMs with an open backup or restore
	// session (backup.go).
	backups sync.Map

	// users hands out per-VM uids; nil when the driver is not root and
	// QEMU runs as the driver's own user (vmuser.go).
	users *uidAllocator
	// copies counts the VMs that use each image copy under
	// StateDir/images (imagecopies.go)
	copies imageCopies
	// kvmGID is /dev/kvm's group, given to QEMU under KVM when the device
	// is not open to everyone.
	kvmGID *uint32

	hostID      string // Config.HostID or the one kept in the state dir (owner.go)
	machineType string // Config.Machine resolved to a versioned type (machine.go)
	versionOnce sync.Once
	version     string
}

var _ hypervisor.Driver = (*Driver)(nil)

// New makes a driver on cfg.StateDir and re-attaches to every VM recorded
// there: running QEMUs are adopted (pid file + QMP socket), dead ones are
// marked stopped (or crashed), and orphans — a QEMU of this state dir
// with no record, a disk directory with no VM — are removed.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("qemu: Config.StateDir is required")
	}
	abs, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, fmt.Errorf("qemu: state dir: %w", err)
	}
	cfg.StateDir = abs
	cfg = cfg.withDefaults()
	for name, dir := range cfg.Pools {
		if cfg.Pools[name], err = filepath.Abs(dir); err != nil {
			return nil, fmt.Errorf("qemu: pool %s: %w", name, err)
		}
	}
	for _, dir := range append([]string{filepath.Join(cfg.StateDir, "vms")}, poolDirs(cfg.Pools)...) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	d := &Driver{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, vms: map[string]*vm{}, keys: cfg.Keys}
	if err := d.resolveHostID(); err != nil {
		return nil, err
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if d.keys == nil {
		d.keys = &FileKeys{Dir: filepath.Join(cfg.StateDir, "keys")}
	}
	if d.accel, err = resolveAccel(cfg.Accel); err != nil {
		return nil, err
	}
	if err := d.checkCPUModel(); err != nil {
		return nil, err
	}
	if err := d.resolveMachine(); err != nil {
		return nil, err
	}
	if d.cfg.VMOverhead == 0 { // measured: see docs/qemu.md
		d.cfg.VMOverhead = 32 * model.MiB
		if d.accel == "tcg" {
			d.cfg.VMOverhead += d.cfg.TCGCache
		}
	}
	if err := d.initUsers(); err != nil {
		return nil, err
	}
	if d.net, err = d.resolveNetwork(); err != nil {
		return nil, err
	}
	if !cfg.NoCgroups {
		cg, err := detectCgroups(cfg.CgroupName, d.vmsShares())
		if err != nil {
			d.log.Info("qemu: cgroups unavailable; CPU and memory controls are recorded but not enforced", "err", err)
		} else {
			d.cg = cg
		}
	}
	if err := d.load(); err != nil {
		return nil, err
	}
	d.recountCopies()
	d.cleanOrphans()
	d.dropUnfinishedIncoming()
	d.log.Info("qemu: driver ready", "state", cfg.StateDir, "accel", d.accel, "network", d.net, "vms", len(d.vms))
	if v := d.qemuVersion(d.ctx); !lowStartSafe(d.accel, v) {
		d.log.Warn("qemu: this QEMU loses guest writes under TCG across migration passes before 9.0; live migrations start pre-copy at the full downtime limit (longer downtime)", "version", v)
	}
	return d, nil
}

func (c Config) withDefaults() Config {
	if c.Pools == nil {
		c.Pools = map[string]string{}
	} else {
		p := make(map[string]string, len(c.Pools))
		for k, v := range c.Pools {
			p[k] = v
		}
		c.Pools = p
	}
	if _, ok := c.Pools["default"]; !ok {
		c.Pools["default"] = filepath.Join(c.StateDir, "pools", "default")
	}
	if c.Bridge == "" {
		c.Bridge = "vpool0"
	}
	if c.Network == "" {
		c.Network = NetAuto
	}
	if c.Accel == "" {
		c.Accel = "auto"
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.QEMUImg == "" {
		c.QEMUImg = "qemu-img"
	}
	if c.Machine == "" {
		c.Machine = "q35"
	}
	if c.MaxVCPUs == 0 {
		c.MaxVCPUs = 8
	}
	if c.MemorySlots == 0 {
		c.MemorySlots = 4
	}
	if c.MaxMemoryFactor == 0 {
		c.MaxMemoryFactor = 4
	}
	if c.TCGCache == 0 {
		c.TCGCache = 64 * model.MiB
	}
	if c.CgroupName == "" {
		c.CgroupName = "vpool"
	}
	if c.MigrationCPUBoost == 0 {
		c.MigrationCPUBoost = defaultMigrationBoost
	}
	if c.MigrationMultifdChannels == 0 {
		c.MigrationMultifdChannels = defaultMultifdChannels(runtime.NumCPU())
	}
	if c.HostReserve == 0 {
		c.HostReserve = model.GiB
	}
	if c.RunDir == "" {
		c.RunDir = filepath.Join(os.TempDir(), fmt.Sprintf("vpool-run-%d", os.Getuid()))
	}
	if c.VMUIDBase == 0 {
		c.VMUIDBase = defaultVMUIDBase
	}
	if c.VMUIDCount == 0 {
		c.VMUIDCount = defaultVMUIDCount
	}
	if c.VMUIDRegistry == "" {
		c.VMUIDRegistry = defaultVMUIDRegistry
	}
	if c.QMPTimeout <= 0 {
		c.QMPTimeout = qmp.DefaultCommandTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	return c
}

func poolDirs(pools map[string]string) []string {
	out := make([]string, 0, len(pools))
	for _, p := range pools {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Name returns "qemu".
func (d *Driver) Name() string { return "qemu" }

// Accel returns the accelerator VMs run with: "kvm" or "tcg".
func (d *Driver) Accel() string { return d.accel }

// Network returns the resolved network mode: bridge, user or none.
func (d *Driver) Network() string { return d.net }

// Close releases the driver's QMP connections and watchers. Running VMs
// keep running: a new driver on the same state dir re-attaches them.
func (d *Driver) Close() error {
	d.cancel()
	d.mu.Lock()
	vms := make([]*vm, 0, len(d.vms))
	for _, v := range d.vms {
		vms = append(vms, v)
	}
	d.mu.Unlock()
	for _, v := range vms {
		v.mu.Lock()
		if v.proc != nil {
			v.proc.detach()
		}
		v.mu.Unlock()
	}
	return nil
}

// resolveAccel picks the accelerator. "auto" means KVM only when
// /dev/kvm answers the API version ioctl, can create a VM, and reports
// SSE3 in its supported CPUID: a nested or emulated /dev/kvm that lacks
// it (as in some sandboxes) hangs guests, so TCG is the safer choice.
func resolveAccel(want string) (string, error) {
	if want == "auto" {
		if env := os.Getenv("VPOOL_ACCEL"); env != "" {
			want = env
		}
	}
	switch want {
	case "tcg":
		return "tcg", nil
	case "kvm":
		if err := probeKVM(); err != nil {
			return "", fmt.Errorf("qemu: accel kvm asked for but unusable: %w", err)
		}
		return "kvm", nil
	case "auto":
		if probeKVM() == nil {
			return "kvm", nil
		}
		return "tcg", nil
	default:
		return "", fmt.Errorf("qemu: unknown accel %q (want auto, kvm or tcg)", want)
	}
}

const (
	kvmGetAPIVersion     = 0xAE00
	kvmCreateVM          = 0xAE01
	kvmGetSupportedCPUID = 0xC008AE05
)

func probeKVM() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	v, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 || v != 12 {
		return fmt.Errorf("KVM_GET_API_VERSION = %d, %v", v, errno)
	}
	vmfd, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("KVM_CREATE_VM: %v", errno)
	}
	syscall.Close(int(vmfd))
	// struct kvm_cpuid2 { u32 nent, padding; struct kvm_cpuid_entry2 e[] }
	// with 40-byte entries {function, index, flags, eax, ebx, ecx, edx, pad[3]}.
	const n = 256
	buf := make([]uint32, 2+n*10)
	buf[0] = n
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %v", errno)
	}
	for i := 0; i < int(buf[0]) && i < n; i++ {
		e := buf[2+i*10:]
		if e[0] == 1 { // leaf 1: ECX bit 0 is SSE3
			if e[5]&1 == 0 {
				return errors.New("KVM does not offer SSE3 (nested or emulated KVM)")
			}
			return nil
		}
	}
	return errors.New("KVM reports no CPUID leaf 1")
}

// qmpOptions are the options of every QMP connection: commands without a
// deadline get QMPTimeout, and out-of-band execution is negotiated (post-copy
// recovery needs it: migrate_postcopy.go).
func (d *Driver) qmpOptions() qmp.Options {
	return qmp.Options{Logger: d.log, CommandTimeout: d.cfg.QMPTimeout, OOB: true}
}

// cleanupCtx is the context of a clean-up after a failure (rollbacks,
// reverters): its own, since the operation's may be done, and bounded,
// so a stuck QEMU cannot hold the VM's lock forever.
func (d *Driver) cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.cfg.QMPTimeout)
}

// binary resolves a configured binary name for error messages and exec.
func binary(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("qemu: %s not found (apt-get install qemu-system-x86 qemu-utils): %w", name, err)
	}
	return p, nil
}
