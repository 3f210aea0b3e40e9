package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/cli"
	"github.com/vpool/vpool/internal/fleet"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/imagepool"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/trace"
)

// DefaultSimHosts is how many simulated hosts `vpool dev` starts beside
// the local one: enough for a migration and a drain.
const DefaultSimHosts = 3

// MaxAgentSimHosts is how many simulated hosts run a whole agent with the
// sim driver (migrations, consoles, snapshots); the ones beyond are fleet
// hosts (internal/fleet: the agent protocol over mutual TLS, without a
// driver), so that --sim-hosts 10000 fits on a laptop.
const MaxAgentSimHosts = 8

// ExitStopTimeout is how long `vpool dev` gives each guest to power off
// when it stops the VMs on exit, before it pulls the plug.
const ExitStopTimeout = 5 * time.Second

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
	// ImageTool converts disk images for the image pool (nil: only
	// kernel images can be imported).
	ImageTool imagepool.Tool
	// GuestCache is where scripts/build-guest.sh keeps the test guest
	// (default GuestCacheRoot()); "-" registers no test guest.
	GuestCache string
	// ConfigPath is where the CLI config is written (default
	// DATA_DIR/config.json, which the CLI finds from the directory that
	// holds the data dir); "-" writes none.
	ConfigPath string
	// KeepVMs leaves the local host's QEMU VMs running when dev stops
	// (the next start re-attaches); by default they are stopped.
	KeepVMs bool
	Logger  *slog.Logger
	Out     io.Writer // progress lines and the banner (default os.Stdout)
	Version string
	// Store replaces the embedded etcd (tests).
	Store store.Store
	// Ready, when set, is called once the server and agents are started.
	Ready func(*Dev)
	// Agent intervals; zero keeps the defaults.
	HeartbeatInterval time.Duration
	StatusInterval    time.Duration
	// Trace gives the fleet hosts' VMs their CPU patterns (nil: 10%).
	Trace *trace.Trace
}

// Dev is a running `vpool dev`.
type Dev struct {
	Server *Server
	Hosts  []DevHost
	// Fleet runs the simulated hosts beyond MaxAgentSimHosts (nil when
	// there are none).
	Fleet *fleet.Fleet
	// Image is what happened to the test guest image at start.
	Image string
}

// DevHost is one agent of a Dev.
type DevHost struct {
	Name   string
	Driver string
	Agent  *agent.Agent
	Labels map[string]string
}

// stepper prints one line per start-up step with its duration.
type stepper struct {
	w     io.Writer
	start time.Time
}

func (s *stepper) done(t0 time.Time, format string, args ...any) {
	fmt.Fprintf(s.w, "dev: %s (%.1fs)\n", fmt.Sprintf(format, args...), time.Since(t0).Seconds())
}

func (c *DevConfig) defaults() error {
	if c.DataDir == "" {
		c.DataDir = ".vpool"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.SimHosts < 0 {
		return fmt.Errorf("devenv: --sim-hosts must not be negative (got %d)", c.SimHosts)
	}
	if c.GuestCache == "" {
		c.GuestCache = GuestCacheRoot()
	}
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return fmt.Errorf("devenv: data dir: %w", err)
	}
	c.DataDir = dataDir
	if c.ConfigPath == "" {
		c.ConfigPath = filepath.Join(dataDir, "config.json")
	}
	return nil
}

// RunDev runs server, embedded etcd, one local agent and SimHosts
// simulated agents in this process until ctx ends.
func RunDev(ctx context.Context, c DevConfig) error {
	if err := c.defaults(); err != nil {
		return err
	}
	st := &stepper{w: c.Out, start: time.Now()}
	t0 := time.Now()
	srv, err := StartServer(ctx, ServerConfig{
		DataDir: c.DataDir, Listen: c.Listen, AgentListen: c.AgentListen, Store: c.Store,
		Name: "dev", Logger: c.Logger, Version: c.Version, ImageTool: c.ImageTool,
	})
	if err != nil {
		return err
	}
	st.done(t0, "server ready: %s store, API %s", srv.Kind(), srv.URL())
	sctx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(sctx) }()

	dev := &Dev{Server: srv}
	actx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	agentErr := make(chan error, c.SimHosts+1)
	err = dev.registerImage(ctx, c, st)
	if err == nil {
		t0 = time.Now()
		err = dev.startAgents(actx, c, &wg, agentErr)
		if err == nil {
			err = dev.startFleet(actx, c, &wg, agentErr)
		}
		if err == nil {
			err = dev.waitHostsReady(ctx, agentErr)
		}
		if err == nil {
			st.done(t0, "%d hosts ready: %s", len(dev.Hosts)+dev.fleetSize(), dev.hostList())
		}
	}
	if err == nil && c.ConfigPath != "-" {
		err = cli.WriteConfig(c.ConfigPath, cli.Config{Addr: srv.URL(), Token: srv.AdminToken()})
	}
	if err == nil {
		dev.banner(c)
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
	// Agents first (their VMs are stopped, or keep running with
	// KeepVMs), then the server.
	stopAgents()
	wg.Wait()
	stopServer()
	if serr := <-srvDone; serr != nil && err == nil {
		err = serr
	}
	return err
}

func (d *Dev) registerImage(ctx context.Context, c DevConfig, st *stepper) error {
	if c.GuestCache == "-" {
		return nil
	}
	t0 := time.Now()
	msg, err := registerTestGuest(ctx, d.Server, c.GuestCache)
	if err != nil {
		return fmt.Errorf("devenv: register the test guest: %w", err)
	}
	d.Image = msg
	st.done(t0, "%s", msg)
	return nil
}

// HostsReadyTimeout bounds how long dev waits for its hosts to join.
const HostsReadyTimeout = time.Minute

// waitHostsReady waits until every host of dev is ready in the store, so
// that the banner never promises hosts that `vpool host list` does not
// show yet.
func (d *Dev) waitHostsReady(ctx context.Context, agentErr <-chan error) error {
	// a fleet host joins in some 20 ms on a busy laptop (once: the data
	// dir keeps its identity)
	timeout := HostsReadyTimeout + time.Duration(d.fleetSize())*20*time.Millisecond
	deadline := time.Now().Add(timeout)
	for {
		hs, _, err := d.Server.Repo().ListHosts(ctx)
		if err != nil {
			return fmt.Errorf("devenv: list hosts: %w", err)
		}
		ready := map[string]bool{}
		for _, h := range hs {
			ready[h.Name] = h.State == model.HostReady
		}
		missing := ""
		for _, h := range d.hostNames() {
			if !ready[h] {
				missing = h
				break
			}
		}
		if missing == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devenv: host %s is not ready after %s", missing, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-agentErr:
			return err
		case <-time.After(50*time.Millisecond + time.Duration(d.fleetSize())*50*time.Microsecond):
		}
	}
}

func (d *Dev) hostList() string {
	s := ""
	for i, h := range d.Hosts {
		if i > 0 {
			s += ", "
		}
		s += h.Name + " (" + h.Driver + ")"
	}
	if n := d.fleetSize(); n > 0 {
		names := d.Fleet.Names()
		s += fmt.Sprintf(", %s .. %s (%d fleet hosts)", names[0], names[n-1], n)
	}
	return s
}

func (d *Dev) startAgents(ctx context.Context, c DevConfig, wg *sync.WaitGroup, errc chan<- error) error {
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
	for i := 1; i <= min(c.SimHosts, MaxAgentSimHosts); i++ {
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
			ServerURL: d.Server.AgentURL(), JoinToken: tok.Token, StateDir: filepath.Join(c.DataDir, "hosts", s.name),
			HostName: s.name, Labels: s.labels, Driver: s.driver, Logger: c.Logger, Version: c.Version,
			HeartbeatInterval: c.HeartbeatInterval, StatusInterval: c.StatusInterval,
		})
		if err != nil {
			return fmt.Errorf("devenv: host %s: %w", s.name, err)
		}
		d.Hosts = append(d.Hosts, DevHost{Name: s.name, Driver: kind, Agent: a, Labels: s.labels})
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("devenv: agent %s: %w", s.name, err)
			}
			if kind == DriverQEMU {
				exitVMs(c, s.name, drv)
			}
			if cl, ok := drv.(io.Closer); ok {
				_ = cl.Close()
			}
		}()
	}
	return nil
}

// exitVMs stops the running VMs of a QEMU host when dev ends (a guest
// gets ExitStopTimeout to power off), or says that they keep running.
func exitVMs(c DevConfig, host string, drv hypervisor.Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), ExitStopTimeout+30*time.Second)
	defer cancel()
	infos, err := drv.List(ctx)
	if err != nil {
		fmt.Fprintf(c.Out, "dev: could not list the VMs of %s: %v\n", host, err)
		return
	}
	var live []string
	for _, in := range infos {
		if in.State == hypervisor.StateRunning || in.State == hypervisor.StatePaused {
			live = append(live, in.ID)
		}
	}
	if len(live) == 0 {
		return
	}
	if c.KeepVMs {
		fmt.Fprintf(c.Out, "dev: %d VM(s) keep running on %s as QEMU processes (--keep-vms-on-exit): the next 'vpool dev --data-dir %s' re-attaches to them, and stops them when it ends without that flag\n",
			len(live), host, c.DataDir)
		return
	}
	t0 := time.Now()
	fmt.Fprintf(c.Out, "dev: stopping %d VM(s) on %s (they start again with the next 'vpool dev'; --keep-vms-on-exit leaves them running)\n", len(live), host)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for _, id := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := drv.Stop(ctx, id, ExitStopTimeout); err != nil {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%s: %v", id, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, f := range failed {
		fmt.Fprintf(c.Out, "dev: could not stop %s\n", f)
	}
	(&stepper{w: c.Out}).done(t0, "stopped %d VM(s) on %s", len(live)-len(failed), host)
}

func (d *Dev) banner(c DevConfig) {
	w := c.Out
	exit := "Ctrl-C stops it and the VMs it runs"
	if c.KeepVMs {
		exit = "Ctrl-C stops it; its QEMU VMs keep running"
	}
	fmt.Fprintf(w, "\nvpool dev is running (%s; state stays in %s)\n\n", exit, c.DataDir)
	fmt.Fprintf(w, "  API          %s\n", d.Server.URL())
	fmt.Fprintf(w, "  dashboard    %s/ui/  (sign in with the admin token)\n", d.Server.URL())
	fmt.Fprintf(w, "  admin token  %s\n", filepath.Join(c.DataDir, "admin.token"))
	if c.ConfigPath != "-" {
		fmt.Fprintf(w, "  CLI config   %s\n", c.ConfigPath)
		fmt.Fprintf(w, "               found by the CLI from %s and below; elsewhere: export VPOOL_CONFIG=%s\n", filepath.Dir(c.DataDir), c.ConfigPath)
	}
	if exe, err := os.Executable(); err == nil {
		fmt.Fprintf(w, "  CLI          %s  (export PATH=$PATH:%s)\n", exe, filepath.Dir(exe))
	}
	fmt.Fprintf(w, "  store        %s\n", d.Server.Kind())
	for _, h := range d.Hosts {
		fmt.Fprintf(w, "  host         %-12s driver %-5s labels %s\n", h.Name, h.Driver, labelText(h.Labels))
	}
	if n := d.fleetSize(); n > 0 {
		names := d.Fleet.Names()
		fmt.Fprintf(w, "  hosts        %s .. %s: %d fleet hosts (the agent protocol without a driver: no migrations, consoles or snapshots) labels %s\n",
			names[0], names[n-1], n, labelText(fleetLabels))
	}
	if im, err := d.Server.Repo().GetImage(context.Background(), TestGuestImage); err == nil && im.Phase == model.ImageReady {
		fmt.Fprintf(w, "  image        %s (the test guest: a busybox shell; vpool image list)\n", TestGuestImage)
	}
	fmt.Fprintf(w, "\nIn another shell, in %s (README.md has the whole tour):\n", filepath.Dir(c.DataDir))
	fmt.Fprintf(w, "  vpool vm create web1 --image %s --memory 256MiB --disk 1GiB --require vpool.io/local=true\n", TestGuestImage)
	fmt.Fprintf(w, "  vpool vm console web1      # the guest's shell; Ctrl-] detaches\n")
	fmt.Fprintf(w, "  vpool events -A -f         # every transition, as it happens\n\n")
}

func labelText(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}
