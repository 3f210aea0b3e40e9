package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/cli"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/store"
)

// DevConfig configures `vpool dev`.
type DevConfig struct {
	DataDir     string // default ./.vpool
	Listen      string // default 127.0.0.1:8440
	AgentListen string // default 127.0.0.1:8441
	// SimHosts is how many simulated hosts join beside the local one.
	SimHosts int
	// LocalDriver is the local agent's driver: auto (default), sim or qemu.
	LocalDriver string
	// LocalName is the local host's name (default: the OS host name).
	LocalName string
	QEMU      QEMUFactory
	// ConfigPath is where the CLI config is written (default
	// cli.DefaultConfigPath()); "-" writes none.
	ConfigPath string
	Logger     *slog.Logger
	Out        io.Writer // the banner (default os.Stdout)
	Version    string
	// Store replaces the embedded etcd (tests).
	Store store.Store
	// Ready, when set, is called once the server and agents are started.
	Ready func(*Dev)
	// Agent intervals; zero keeps the defaults.
	HeartbeatInterval time.Duration
	StatusInterval    time.Duration
}

// Dev is a running `vpool dev`.
type Dev struct {
	Server *Server
	Hosts  []DevHost
}

// DevHost is one agent of a Dev.
type DevHost struct {
	Name   string
	Driver string
	Agent  *agent.Agent
}

// RunDev runs server, embedded etcd, one local agent and SimHosts
// simulated agents in this process until ctx ends.
func RunDev(ctx context.Context, c DevConfig) error {
	if c.DataDir == "" {
		c.DataDir = ".vpool"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.ConfigPath == "" {
		c.ConfigPath = cli.DefaultConfigPath()
	}
	if c.SimHosts < 0 {
		return fmt.Errorf("devenv: --sim-hosts must not be negative (got %d)", c.SimHosts)
	}
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("devenv: data dir: %w", err)
	}
	srv, err := StartServer(ctx, ServerConfig{
		DataDir: dataDir, Listen: c.Listen, AgentListen: c.AgentListen, Store: c.Store,
		Name: "dev", Logger: c.Logger, Version: c.Version,
	})
	if err != nil {
		return err
	}
	sctx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(sctx) }()

	dev := &Dev{Server: srv}
	actx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	agentErr := make(chan error, c.SimHosts+1)
	err = dev.startAgents(actx, c, dataDir, &wg, agentErr)
	if err == nil && c.ConfigPath != "-" {
		err = cli.WriteConfig(c.ConfigPath, cli.Config{Addr: srv.URL(), Token: srv.AdminToken()})
	}
	if err == nil {
		dev.banner(c, dataDir)
		if c.Ready != nil {
			c.Ready(dev)
		}
		select {
		case <-ctx.Done():
		case err = <-srvDone:
			srvDone <- err
		case err = <-agentErr:
		}
	}
	// Agents first (VMs keep running), then the server.
	stopAgents()
	wg.Wait()
	stopServer()
	if serr := <-srvDone; serr != nil && err == nil {
		err = serr
	}
	return err
}

func (d *Dev) startAgents(ctx context.Context, c DevConfig, dataDir string, wg *sync.WaitGroup, errc chan<- error) error {
	local := c.LocalName
	if local == "" {
		local = agent.DefaultHostName()
	}
	reg := sim.NewRegistry()
	type spec struct {
		name   string
		labels map[string]string
		driver DriverOptions
	}
	specs := []spec{{name: local, labels: map[string]string{"vpool.io/local": "true"}, driver: DriverOptions{Kind: c.LocalDriver, QEMU: c.QEMU, SimRegistry: reg}}}
	for i := 1; i <= c.SimHosts; i++ {
		specs = append(specs, spec{name: fmt.Sprintf("sim-%d", i), labels: map[string]string{"vpool.io/sim": "true"},
			driver: DriverOptions{Kind: DriverSim, SimRegistry: reg}})
	}
	// one use per host; hosts that joined before keep their identity
	tok, err := d.Server.NewJoinToken(ctx, time.Hour, len(specs))
	if err != nil {
		return fmt.Errorf("devenv: join token: %w", err)
	}
	for _, s := range specs {
		a, drv, kind, err := NewAgent(AgentConfig{
			ServerURL: d.Server.AgentURL(), JoinToken: tok.Token, StateDir: filepath.Join(dataDir, "hosts", s.name),
			HostName: s.name, Labels: s.labels, Driver: s.driver, Logger: c.Logger, Version: c.Version,
			HeartbeatInterval: c.HeartbeatInterval, StatusInterval: c.StatusInterval,
			ImageDirs: []string{filepath.Join(dataDir, "images")},
		})
		if err != nil {
			return fmt.Errorf("devenv: host %s: %w", s.name, err)
		}
		d.Hosts = append(d.Hosts, DevHost{Name: s.name, Driver: kind, Agent: a})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("devenv: agent %s: %w", s.name, err)
			}
			if cl, ok := drv.(io.Closer); ok {
				_ = cl.Close()
			}
		}()
	}
	return nil
}

func (d *Dev) banner(c DevConfig, dataDir string) {
	w := c.Out
	fmt.Fprintf(w, "vpool dev is running (Ctrl-C stops it; VMs and state stay in %s)\n\n", dataDir)
	fmt.Fprintf(w, "  API          %s\n", d.Server.URL())
	fmt.Fprintf(w, "  agents join  %s\n", d.Server.AgentURL())
	fmt.Fprintf(w, "  admin token  %s\n", filepath.Join(dataDir, "admin.token"))
	if c.ConfigPath != "-" {
		fmt.Fprintf(w, "  CLI config   %s\n", c.ConfigPath)
	}
	fmt.Fprintf(w, "  store        %s\n", d.Server.Kind())
	for _, h := range d.Hosts {
		fmt.Fprintf(w, "  host         %-12s driver %s\n", h.Name, h.Driver)
	}
	fmt.Fprintf(w, "\nIn another shell:\n  vpool vm create web1 --vcpus 1 --memory 512MiB --disk 1GiB --wait\n  vpool vm list\n  vpool events -f\n")
}
