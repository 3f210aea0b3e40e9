package devenv

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
)

// Driver kinds.
const (
	DriverAuto = "auto"
	DriverSim  = "sim"
	DriverQEMU = "qemu"
)

// ErrNoQEMU says the QEMU driver was asked for but cannot run here.
var ErrNoQEMU = errors.New("devenv: the qemu driver is not available")

// QEMUFactory makes a QEMU driver. cmd/vpool supplies it; nil means this
// build has no QEMU driver.
type QEMUFactory func(o QEMUOptions) (hypervisor.Driver, error)

// QEMUOptions configure a QEMU driver.
type QEMUOptions struct {
	StateDir string
	// HostID names the host in the owner records of its disks on shared
	// storage (the host name: unique in the cluster).
	HostID string
	Logger *slog.Logger
	// Pools maps storage pool names to directories (a shared pool is one
	// every host mounts at the same path).
	Pools map[string]string
	// MigrationHost is the address migration streams come in on (the
	// host part of the agent's --address; default loopback).
	MigrationHost string
	// CPUModel is the guests' CPU model, the cluster's baseline (empty:
	// the driver's default).
	CPUModel string
	// Machine is the guests' machine type (empty: the driver's default,
	// q35, resolved to this QEMU's newest versioned type).
	Machine string
	// VMsCPUShares and MigrationCPUBoost: the VMs' CPU weight against the
	// host's other processes and its raise during a migration (0: the
	// driver's defaults; docs/migration-slo.md).
	VMsCPUShares      int
	MigrationCPUBoost int
	// MigrationMultifdChannels: the connections a busy guest's outgoing
	// migration uses (0: the driver's default).
	MigrationMultifdChannels int
	// VMUIDBase and VMUIDCount: the range of per-VM uids each QEMU runs
	// as one of (0: the driver's default, 2000000 and 65536).
	VMUIDBase, VMUIDCount uint32
	// HideFromVMs: directories no QEMU sees (the agent's state dir, with
	// its key and certificates; docs/security.md VP-11).
	HideFromVMs []string
}

// DriverOptions choose and configure a host's driver.
type DriverOptions struct {
	Kind     string // sim | qemu | auto (default auto)
	StateDir string // the driver's state lives under StateDir/<kind>
	HostName string
	// Sim capacity (defaults: 8 CPUs, 32GiB, 1TiB).
	SimCPUs   int
	SimMemory model.Bytes
	SimDisk   model.Bytes
	// SimRegistry connects simulated hosts of one process for migration;
	// without it a sim host with a MigrationHost migrates to hosts of
	// other processes over TCP.
	SimRegistry *sim.Registry
	// SimMigrateDelay is how long a simulated live migration takes.
	SimMigrateDelay time.Duration
	// SimMemoryOnly keeps sim VMs in memory only (no state file): for
	// hundreds of simulated hosts in tests.
	SimMemoryOnly bool
	QEMU          QEMUFactory
	// Pools, MigrationHost, CPUModel and Machine go to the QEMU driver
	// (QEMUOptions); a sim host reports Pools (shared when the directory
	// is outside StateDir, as QEMU does) and migrates on MigrationHost.
	Pools         map[string]string
	MigrationHost string
	CPUModel      string
	Machine       string
	// VMsCPUShares and MigrationCPUBoost go to the QEMU driver too.
	VMsCPUShares             int
	MigrationCPUBoost        int
	MigrationMultifdChannels int
	// VMUIDBase and VMUIDCount go to the QEMU driver (QEMUOptions).
	VMUIDBase, VMUIDCount uint32
	Logger                *slog.Logger
}

// QEMUInstalled says whether qemu-system-x86_64 is in PATH.
func QEMUInstalled() bool {
	_, err := exec.LookPath("qemu-system-x86_64")
	return err == nil
}

// OpenDriver returns the driver o asks for and the kind it chose: auto
// means qemu where the driver is built in and qemu-system-x86_64 is
// installed, else sim. A sim driver keeps its VMs in StateDir/sim/host.json,
// so that an agent restarted after kill -9 finds them running, as it
// would find real QEMU processes.
func OpenDriver(o DriverOptions) (hypervisor.Driver, string, error) {
	kind := o.Kind
	if kind == "" {
		kind = DriverAuto
	}
	if kind == DriverAuto {
		kind = DriverSim
		if o.QEMU != nil && QEMUInstalled() {
			kind = DriverQEMU
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch kind {
	case DriverQEMU:
		if o.QEMU == nil {
			return nil, "", fmt.Errorf("%w: this build has no QEMU driver", ErrNoQEMU)
		}
		if !QEMUInstalled() {
			return nil, "", fmt.Errorf("%w: qemu-system-x86_64 is not installed", ErrNoQEMU)
		}
		d, err := o.QEMU(QEMUOptions{StateDir: filepath.Join(o.StateDir, "qemu"), HostID: o.HostName, Logger: o.Logger,
			Pools: o.Pools, MigrationHost: o.MigrationHost, CPUModel: o.CPUModel, Machine: o.Machine,
			VMsCPUShares: o.VMsCPUShares, MigrationCPUBoost: o.MigrationCPUBoost, MigrationMultifdChannels: o.MigrationMultifdChannels,
			VMUIDBase: o.VMUIDBase, VMUIDCount: o.VMUIDCount, HideFromVMs: []string{o.StateDir}})
		if err != nil {
			return nil, "", err
		}
		return d, kind, nil
	case DriverSim:
		cfg := sim.Config{Name: o.HostName, CPUs: o.SimCPUs, Memory: o.SimMemory, Disk: o.SimDisk, Registry: o.SimRegistry,
			MigrateDelay: o.SimMigrateDelay, Pools: simPools(o.Pools, o.StateDir)}
		if o.SimRegistry == nil {
			cfg.MigrationHost = o.MigrationHost
		}
		if !o.SimMemoryOnly && o.StateDir != "" {
			cfg.StateFile = filepath.Join(o.StateDir, "sim", "host.json")
		}
		h, err := sim.NewHost(cfg)
		if err != nil {
			return nil, "", err
		}
		return h.Driver(), kind, nil
	default:
		return nil, "", fmt.Errorf("devenv: unknown driver %q (want sim, qemu or auto)", kind)
	}
}

// simPools are a sim host's pools: shared when the directory lies outside
// the agent's state dir (the QEMU driver's rule).
func simPools(dirs map[string]string, stateDir string) []model.StoragePoolRef {
	var out []model.StoragePoolRef
	for name, dir := range dirs {
		rel, err := filepath.Rel(stateDir, dir)
		local := stateDir != "" && err == nil && !strings.HasPrefix(rel, "..")
		out = append(out, model.StoragePoolRef{Name: name, Tier: "local", Shared: !local})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// AgentConfig configures one agent with its driver.
type AgentConfig struct {
	ServerURL string
	JoinToken string
	StateDir  string
	HostName  string
	Labels    map[string]string
	Address   string
	Networks  []string
	// Net makes the host serve vpool networks (see NetConfig).
	Net     *agent.NetConfig
	Driver  DriverOptions
	Logger  *slog.Logger
	Version string
	// ImageCache is where a QEMU host keeps the image files it fetches
	// from the server (default StateDir/images); a sim host boots any
	// image by name and fetches nothing.
	ImageCache string
	// Intervals; zero keeps the agent's defaults.
	HeartbeatInterval time.Duration
	StatusInterval    time.Duration
}

// NewAgent opens the driver and returns the agent and the driver kind.
func NewAgent(c AgentConfig) (*agent.Agent, hypervisor.Driver, string, error) {
	if c.HostName == "" {
		c.HostName = agent.DefaultHostName()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return nil, nil, "", fmt.Errorf("devenv: agent state dir: %w", err)
	}
	do := c.Driver
	do.StateDir, do.HostName = c.StateDir, c.HostName
	if do.MigrationHost == "" && c.Address != "" {
		do.MigrationHost = addressHost(c.Address)
	}
	if do.Logger == nil {
		do.Logger = c.Logger.With("component", "driver", "host", c.HostName)
	}
	d, kind, err := OpenDriver(do)
	if err != nil {
		return nil, nil, "", err
	}
	cache := ""
	if kind == DriverQEMU {
		cache = c.ImageCache
		if cache == "" {
			cache = filepath.Join(c.StateDir, "images")
		}
	}
	a, err := agent.New(agent.Config{
		ServerURL:         c.ServerURL,
		JoinToken:         c.JoinToken,
		StateDir:          c.StateDir,
		HostName:          c.HostName,
		Labels:            c.Labels,
		Address:           c.Address,
		Networks:          c.Networks,
		Net:               c.Net,
		Driver:            d,
		Logger:            c.Logger,
		Version:           c.Version,
		HeartbeatInterval: c.HeartbeatInterval,
		StatusInterval:    c.StatusInterval,
		ImageCache:        cache,
	})
	if err != nil {
		return nil, nil, "", err
	}
	return a, d, kind, nil
}

// addressHost is the host part of an agent's --address ("10.0.0.5",
// "10.0.0.5:8443", "[::1]:1", "https://h:1").
func addressHost(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Hostname()
	}
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}
