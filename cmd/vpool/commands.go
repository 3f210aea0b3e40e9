package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor/qemu"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/server"
)

func serverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: API, agent listener, controllers and (by default) an embedded etcd member",
		Args:  cobra.NoArgs,
	}
	f := cmd.Flags()
	dataDir := f.String("data-dir", "/var/lib/vpool", "state directory (admin.token; embedded etcd under etcd/)")
	listen := f.String("listen", server.DefaultListen, "address of the REST API")
	agentListen := f.String("agent-listen", server.DefaultAgentListen, "address of the agents' mutual-TLS listener")
	endpoints := f.String("etcd-endpoints", "", "comma-separated etcd client URLs of an existing cluster (default: embedded member)")
	etcdCA := f.String("etcd-cacert", "", "with --etcd-endpoints: PEM file of the CA that signed the etcd members (default: the system roots)")
	etcdCert := f.String("etcd-cert", "", "with --etcd-endpoints: PEM client certificate for etcd")
	etcdKey := f.String("etcd-key", "", "with --etcd-endpoints: PEM key of --etcd-cert")
	etcdUser := f.String("etcd-user", "", "with --etcd-endpoints: etcd user; its password comes from --etcd-password-file or VPOOL_ETCD_PASSWORD, never the command line")
	etcdPassFile := f.String("etcd-password-file", "", "file holding the password of --etcd-user")
	caKeyFile := f.String("ca-key-file", "", "the key that seals the cluster CA's private key in the store (default DATA_DIR/ca-seal.key, made with the CA); every server of a cluster needs the same file")
	name := f.String("name", "", "this server's name: in leader election, and its store member's (default: the host name)")
	tlsAPI := f.Bool("tls", false, "serve the REST API over HTTPS with a certificate of the cluster CA")
	imagePool := f.String("image-pool", "", "directory of image files (default DATA_DIR/image-pool; servers sharing a store must share it)")
	powerOn := f.String("power-on-cmd", "", `command that wakes a host (text/template over the host, e.g. "wakeonlan {{index .Labels \"vpool.io/mac\"}}"); default: the agent protocol only`)
	powerOff := f.String("power-off-cmd", "", `command that puts a host to standby (e.g. "ipmitool -I lanplus -H {{index .Labels \"vpool.io/bmc\"}} -f /etc/vpool/ipmi.pass chassis power soft")`)
	fenceCmd := f.String("fence-cmd", "", `command that powers a failed host off for sure (e.g. "ipmitool -I lanplus -H {{index .Labels \"vpool.io/bmc\"}} -f /etc/vpool/ipmi.pass chassis power off"); its success lets HA restart the host's VMs before the fence timeout's margin (docs/ha.md)`)
	backupDirs := f.StringArray("backup-dir", nil, "a directory under which backup repositories may be registered (repeatable; default DATA_DIR/backups); hosts must see it at the same path")
	auditDir := f.String("audit-dir", "", "where the leader appends the audit trail's export files (default DATA_DIR/audit)")
	auditWindow := f.Int("audit-window", 0, "audit records the store keeps; older ones are pruned once exported (default 20000)")
	agentRate := f.Float64("agent-rate", 0, "requests a second one host may make on the agent listener, in bursts of ten times as many; heartbeats are counted apart (default 100; negative: no limit)")
	maxPending := f.Int("max-pending-placements", 0, "VMs admitted but not yet placed (waiting for the scheduler's first decision) beyond which a create waits up to 2 s and is then refused with 429 rate_limited (default 5000; negative: no bound)")
	apiRate := f.Float64("api-rate", 0, "user API requests a second one project's tokens together may make, in bursts of ten times as many; cluster admins are not limited (default 50; negative: no limit)")
	gridFile := f.String("grid-intensity-file", "", "grid carbon intensity over time for metering: lines TIME,SITE,G_PER_KWH (RFC 3339 time; empty site: every site)")
	memLimit := f.String("memory-limit", "", "soft limit of the server's Go memory (GOMEMLIMIT; the embedded etcd's database file is not in it): off, a size (e.g. 3GiB) or a share of the cgroup's or machine's memory (e.g. 60%); the collector runs more often near it (default $"+envMemoryLimit+", else Go's GOMEMLIMIT, else 90% of the cgroup's memory limit when it has one, else none: docs/scale.md)")
	clusterOpts := serverClusterFlags(cmd)
	logger := logFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := logger()
		if err != nil {
			return err
		}
		peer, initial, join, joinTok, err := clusterOpts(log)
		if err != nil {
			return err
		}
		if set, err := applyMemoryLimit(*memLimit); err != nil {
			return err
		} else if set != "" {
			log.Info(set)
		}
		n := *name
		if n == "" {
			n, _ = os.Hostname()
		}
		pass, err := etcdPassword(*etcdUser, *etcdPassFile)
		if err != nil {
			return err
		}
		srv, err := devenv.StartServer(cmd.Context(), devenv.ServerConfig{
			DataDir: *dataDir, Listen: *listen, AgentListen: *agentListen, EtcdEndpoints: splitList(*endpoints),
			EtcdCACert: *etcdCA, EtcdCert: *etcdCert, EtcdKey: *etcdKey, EtcdUser: *etcdUser, EtcdPassword: pass,
			CAKeyFile: *caKeyFile, BackupDirs: *backupDirs,
			Name: n, Logger: log, Version: version, TLS: *tlsAPI, ImagePool: *imagePool, ImageTool: qemu.ImageTool{},
			Controller: controller.Config{Power: hostPower(*powerOn, *powerOff), Fencer: hostFencer(*fenceCmd)},
			AuditDir:   *auditDir, AuditWindow: *auditWindow, GridSeriesFile: *gridFile, AgentRate: *agentRate, APIRate: *apiRate,
			MaxPendingPlacements: *maxPending,
			PeerURL:              peer, InitialCluster: initial, Join: join, JoinToken: joinTok,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "vpool server: API %s, agents %s, store %s, admin token in %s/admin.token\n",
			srv.URL(), srv.AgentURL(), srv.Kind(), *dataDir)
		return srv.Run(cmd.Context())
	}
	return cmd
}

func agentCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a host agent: join the cluster, then converge the VMs assigned to this host",
		Args:  cobra.NoArgs,
	}
	f := cmd.Flags()
	srvURL := f.String("server", "https://127.0.0.1:8441", "the server's agent listener, or every server's, comma-separated: the agent fails over between them")
	token := f.String("join-token", "", "join token on the command line: visible to every local user in ps; prefer --join-token-file or VPOOL_JOIN_TOKEN")
	tokenFile := f.String("join-token-file", "", "file holding the join token from 'vpool host join-token' or 'vpool host rekey' (first start or re-key only; or env VPOOL_JOIN_TOKEN)")
	stateDir := f.String("state-dir", "/var/lib/vpool-agent", "agent state: key, certificate, CA and the driver's VMs")
	name := f.String("name", "", "host name (default: the OS host name)")
	labels := f.StringArray("label", nil, "host label k=v (repeatable)")
	address := f.String("address", "", "address other hosts reach this one at (migration)")
	driver := f.String("driver", devenv.DriverAuto, "hypervisor driver: sim, qemu or auto (qemu where installed)")
	simCPUs := f.Int("sim-cpus", 8, "CPUs of a sim host")
	simMem := f.String("sim-memory", "32GiB", "memory of a sim host")
	simDisk := f.String("sim-disk", "1TiB", "disk of a sim host")
	simMigrate := f.Duration("sim-migrate-delay", 0, "how long a sim host's live migration takes (sim hosts migrate over TCP on --address)")
	pools := f.StringArray("pool", nil, "storage pool NAME=DIR (repeatable; a shared pool is a directory every host mounts at the same path, outside --state-dir)")
	networks := f.StringArray("network", nil, "a network this host is attached to (repeatable); migrations refuse a target without the VM's networks (default: not checked)")
	cpuModel := f.String("cpu-model", "", "guest CPU model of a qemu host, the same on every host so VMs move between different CPUs (e.g. Haswell-noTSX; default: host under KVM, qemu64 under TCG)")
	machine := f.String("machine", "", "guest machine type of a qemu host, the same on every host so running VMs can move (e.g. pc-q35-7.2 while some hosts still run QEMU 7.2; default: q35, this QEMU's newest)")
	vmsShares := f.Int("vm-cpu-shares", 0, "CPU weight of the cgroup holding every VM of a qemu host against the host's other processes, in cgroup v1 shares (1024 = one busy process; default 1024 × host CPUs)")
	migBoost := f.Int("migration-cpu-boost", 0, "factor by which a live migration raises the CPU weight of the VMs' group and of the migrating VM on both hosts while it needs the CPU (default 8; 1 turns it off)")
	migChannels := f.Int("migration-multifd-channels", 0, "connections an outgoing live migration uses when the guest dirties memory faster than one stream would converge (multifd; not with post-copy; default 2 on a host with 2 or more CPUs; 1 turns it off)")
	uidRange := f.String("vm-uid-range", "", "BASE:COUNT of the uids (and gids) a qemu host gives its VMs, one each, never shared: every QEMU runs as its VM's own unprivileged user (default 2000000:65536; the range must hold no host users)")
	var netOpts devenv.NetOptions
	f.StringVar(&netOpts.Overlay, "overlay-address", "", "this host's VXLAN underlay address: the host serves vpool networks (needs root, iproute2, nftables; dnsmasq-base for DHCP)")
	f.IntVar(&netOpts.UnderlayMTU, "underlay-mtu", 1500, "MTU of the underlay path between hosts (a VXLAN network needs its MTU + 50)")
	f.StringVar(&netOpts.VLANUplink, "vlan-uplink", "", "device that carries VLAN networks (kernels with 802.1Q)")
	f.StringVar(&netOpts.DHCPDir, "dhcp-dir", "/run/vpool/dhcp", "dnsmasq's files (must be searchable by nobody)")
	logger := logFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := logger()
		if err != nil {
			return err
		}
		netCfg, closeNet, err := devenv.NetConfig(netOpts, log)
		if err != nil {
			return err
		}
		defer closeNet()
		lab, err := parseLabels(*labels)
		if err != nil {
			return err
		}
		mem, err := model.ParseBytes(*simMem)
		if err != nil {
			return fmt.Errorf("--sim-memory: %w", err)
		}
		disk, err := model.ParseBytes(*simDisk)
		if err != nil {
			return fmt.Errorf("--sim-disk: %w", err)
		}
		tok, err := joinToken(*token, *tokenFile, log)
		if err != nil {
			return err
		}
		poolDirs, err := parsePools(*pools)
		if err != nil {
			return err
		}
		uidBase, uidCount, err := parseUIDRange(*uidRange)
		if err != nil {
			return err
		}
		a, drv, kind, err := devenv.NewAgent(devenv.AgentConfig{
			ServerURL: *srvURL, JoinToken: tok, StateDir: *stateDir, HostName: *name, Labels: lab, Address: *address, Networks: *networks, Net: netCfg,
			Driver: devenv.DriverOptions{Kind: *driver, SimCPUs: *simCPUs, SimMemory: mem, SimDisk: disk, SimMigrateDelay: *simMigrate, QEMU: qemuDriver, Pools: poolDirs,
				CPUModel: *cpuModel, Machine: *machine, VMsCPUShares: *vmsShares, MigrationCPUBoost: *migBoost,
				MigrationMultifdChannels: *migChannels, VMUIDBase: uidBase, VMUIDCount: uidCount},
			Logger: log, Version: version,
		})
		if err != nil {
			return err
		}
		defer closeDriver(drv)
		log.Info("agent starting", "server", *srvURL, "driver", kind, "state", *stateDir)
		return a.Run(cmd.Context())
	}
	return cmd
}

func devCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run server, embedded etcd, a local host and simulated hosts in one process",
		Long: `Run the whole platform on this machine: the server with an embedded etcd,
one local agent (QEMU where qemu-system-x86_64 is installed, else simulated)
and --sim-hosts simulated hosts (3 by default: enough to migrate and drain;
beyond 8, fleet hosts that speak the agent protocol without a driver, so
that --sim-hosts 10000 runs on a laptop).
The test guest of scripts/build-guest.sh is registered as the image
"busybox". State lives in --data-dir; the admin token is written to
DATA_DIR/admin.token and the CLI config to DATA_DIR/config.json, which the
CLI finds from the directory holding the data dir (elsewhere set
VPOOL_CONFIG), so that 'vpool vm list' works in another shell without flags.
The dashboard is served at the API's address under /ui/.

Ctrl-C stops dev and the VMs of the local QEMU host (each guest gets a few
seconds to power off); they start again with the next 'vpool dev'. With
--keep-vms-on-exit they keep running and the next 'vpool dev' re-attaches.`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	dataDir := f.String("data-dir", ".vpool", "state directory")
	listen := f.String("listen", server.DefaultListen, "address of the REST API")
	agentListen := f.String("agent-listen", server.DefaultAgentListen, "address of the agents' mutual-TLS listener")
	simHosts := f.Int("sim-hosts", devenv.DefaultSimHosts, "number of simulated hosts to add")
	keepVMs := f.Bool("keep-vms-on-exit", false, "leave the local host's QEMU VMs running when dev stops (the next start re-attaches)")
	driver := f.String("driver", devenv.DriverAuto, "the local host's driver: sim, qemu or auto")
	name := f.String("name", "", "the local host's name (default: the OS host name)")
	cfgPath := f.String("client-config", "", "where to write the CLI config (default DATA_DIR/config.json; - for none)")
	traceDir := f.String("trace-dir", "", "a PlanetLab folder giving the fleet hosts' VMs their CPU (hosts beyond the first 8 simulated ones)")
	logger := logFlagsAt(cmd, "warn") // the banner and the steps speak; --log-level info shows every part at work
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := logger()
		if err != nil {
			return err
		}
		tr, err := readTrace(*traceDir)
		if err != nil {
			return err
		}
		return devenv.RunDev(cmd.Context(), devenv.DevConfig{Trace: tr,
			DataDir: *dataDir, Listen: *listen, AgentListen: *agentListen, SimHosts: *simHosts,
			LocalDriver: *driver, LocalName: *name, QEMU: qemuDriver, ConfigPath: *cfgPath, KeepVMs: *keepVMs, ImageTool: qemu.ImageTool{},
			Logger: log, Out: cmd.OutOrStdout(), Version: version,
		})
	}
	return cmd
}

// parseKV parses repeated KEY=VALUE flags: want says what a value should
// look like, check refuses a pair with the fix in its message.
func parseKV(flag, want string, kvs []string, check func(k, v string) error) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want %s", flag, kv, want)
		}
		if err := check(k, v); err != nil {
			return nil, fmt.Errorf("--%s %q: %w", flag, kv, err)
		}
		out[k] = v
	}
	return out, nil
}

func parseLabels(kvs []string) (map[string]string, error) {
	return parseKV("label", "key=value", kvs, func(string, string) error { return nil })
}

func parsePools(kvs []string) (map[string]string, error) {
	const want = "NAME=DIR, e.g. --pool shared=/mnt/vpool"
	return parseKV("pool", want, kvs, func(k, v string) error {
		if v == "" {
			return errors.New("want " + want)
		}
		return model.ValidName("pool", k)
	})
}

// parseUIDRange parses --vm-uid-range BASE:COUNT ("": the driver's
// default).
func parseUIDRange(s string) (base, count uint32, err error) {
	if s == "" {
		return 0, 0, nil
	}
	const want = "want BASE:COUNT with BASE > 0, e.g. --vm-uid-range 2000000:65536"
	b, c, ok := strings.Cut(s, ":")
	bn, berr := strconv.ParseUint(b, 10, 32)
	cn, cerr := strconv.ParseUint(c, 10, 32)
	if !ok || berr != nil || cerr != nil || bn == 0 || cn == 0 || bn+cn > 1<<32-1 {
		return 0, 0, fmt.Errorf("--vm-uid-range %q: %s", s, want)
	}
	return uint32(bn), uint32(cn), nil
}

func closeDriver(d any) {
	if c, ok := d.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

// hostPower switches real hosts with the given commands and simulated
// ones through the agent protocol; with no command, every host goes
// through the agent protocol.
func hostPower(on, off string) controller.HostPower {
	if on == "" && off == "" {
		return controller.AgentPower{}
	}
	return controller.PowerByDriver{Default: &controller.ExecPower{On: on, Off: off},
		Drivers: map[string]controller.HostPower{"sim": controller.AgentPower{}}}
}

// hostFencer is the HA fence command of --fence-cmd (nil: fencing waits
// for the fence timeout and margin).
func hostFencer(cmd string) controller.HostFencer {
	if cmd == "" {
		return nil
	}
	return &controller.ExecFence{Command: cmd}
}
