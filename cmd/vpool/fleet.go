package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/cli"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/fleet"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/trace"
)

func fleetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Run many simulated hosts against servers over the agent protocol",
		Long: `Run --hosts simulated hosts against one or more servers, each a real
participant of the agent protocol: it joins with a join token (its own key
and certificate), keeps one mutual-TLS connection, heartbeats with its
inventory and its VMs' usage (replayed from PlanetLab CPU traces with
--trace-dir), long-polls its assignments and reports its VMs running,
stopped or gone. Fleet hosts do not migrate VMs, serve consoles or take
snapshots. Join tokens come from --join-token (each joins 100 hosts, so
that joins run side by side), else are made through the API with the
CLI's address and token (an admin's).`,
		Example: `  vpool fleet --hosts 10000 --trace-dir /data/planetlab/20110303
  vpool fleet --hosts 3000 --server https://10.0.0.1:8441 --server https://10.0.0.2:8441`,
		Args: cobra.NoArgs,
	}
	f := cmd.Flags()
	servers := f.StringArray("server", []string{"https://" + server.DefaultAgentListen}, "agent listener URL (repeat for several servers; host i starts on server i mod n)")
	tokens := f.StringArray("join-token", nil, "join token with 100 uses or more (repeat: each joins 100 hosts)")
	hosts := f.Int("hosts", 100, "how many hosts")
	prefix := f.String("prefix", fleet.DefaultPrefix, "host names are PREFIX-00001 ...")
	cpus := f.Int("cpus", fleet.DefaultCapacity.CPUs, "CPUs of each host")
	memory := f.String("memory", fleet.DefaultCapacity.Memory.String(), "memory of each host")
	disk := f.String("disk", fleet.DefaultCapacity.Disk.String(), "disk of each host")
	labels := f.StringArray("label", []string{"vpool.io/fleet=true"}, "label every host reports (key=value, repeat)")
	traceDir := f.String("trace-dir", "", "a PlanetLab folder: each VM's CPU follows one of its files (default: 10% each)")
	traceStep := f.Duration("trace-step", fleet.DefaultTraceStep, "how long one trace sample lasts")
	statsEvery := f.Duration("stats-every", 10*time.Second, "print heartbeat figures this often (0: never)")
	stateDir := f.String("state-dir", "", "keep the hosts' keys and certificates here, to join only once")
	logger := logFlagsAt(cmd, "warn")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, err := logger()
		if err != nil {
			return err
		}
		cfg := fleet.Config{Servers: *servers, Hosts: *hosts, Prefix: *prefix, TraceStep: *traceStep, Logger: log, Version: version,
			StateDir: *stateDir}
		if cfg.Labels, err = parseLabels(*labels); err != nil {
			return err
		}
		if cfg.Capacity, err = capacity(*cpus, *memory, *disk); err != nil {
			return err
		}
		if cfg.Trace, err = readTrace(*traceDir); err != nil {
			return err
		}
		if cfg.Tokens, err = tokenSource(*tokens); err != nil {
			return err
		}
		fl, err := fleet.New(cfg)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		t0 := time.Now()
		if err := fl.Join(ctx); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "fleet: %d hosts joined (%.1fs)\n", fl.Joined(), time.Since(t0).Seconds())
		if *statsEvery > 0 {
			go printStats(ctx, cmd, fl, *statsEvery)
		}
		return fl.Run(ctx)
	}
	return cmd
}

// readTrace reads a PlanetLab folder (nil for "").
func readTrace(dir string) (*trace.Trace, error) {
	if dir == "" {
		return nil, nil
	}
	t, err := trace.ReadPlanetLabDir(dir, trace.ByName)
	if err != nil {
		return nil, fmt.Errorf("--trace-dir: %w", err)
	}
	return t, nil
}

func capacity(cpus int, memory, disk string) (model.Resources, error) {
	mem, err := model.ParseBytes(memory)
	if err != nil {
		return model.Resources{}, fmt.Errorf("--memory: %w", err)
	}
	d, err := model.ParseBytes(disk)
	if err != nil {
		return model.Resources{}, fmt.Errorf("--disk: %w", err)
	}
	if cpus < 1 {
		return model.Resources{}, errors.New("--cpus: at least 1")
	}
	return model.Resources{CPUs: cpus, Memory: mem, Disk: d}, nil
}

// tokenSource hands out the given join tokens in turn, or makes tokens of
// 100 uses through the API with the CLI's configuration.
func tokenSource(given []string) (func(context.Context) (string, error), error) {
	if len(given) > 0 {
		i := 0
		return func(context.Context) (string, error) {
			if i >= len(given) {
				return "", errors.New("fleet: more hosts than the join tokens join (100 each); give another --join-token")
			}
			i++
			return given[i-1], nil
		}, nil
	}
	cfg, err := cli.ReadConfig(cli.DefaultConfigPath())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	addr, tok := firstSet(os.Getenv(cli.EnvAddr), cfg.Addr), firstSet(os.Getenv(cli.EnvToken), cfg.Token)
	if addr == "" || tok == "" {
		return nil, errors.New("fleet: give --join-token, or run where the CLI has an address and an admin token (vpool dev writes them)")
	}
	var opts []client.Option
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("fleet: CA of the API: %w", err)
		}
		opts = append(opts, client.WithCACert(pem))
	}
	c, err := client.New(addr, tok, opts...)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (string, error) {
		jt, err := c.CreateJoinToken(ctx, api.JoinTokenRequest{TTL: "24h", Uses: 100})
		if err != nil {
			return "", err
		}
		return jt.Token, nil
	}, nil
}

func firstSet(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func printStats(ctx context.Context, cmd *cobra.Command, fl *fleet.Fleet, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := fl.Stats()
		fmt.Fprintf(cmd.OutOrStdout(), "fleet: %d heartbeats (%d failed), p50 %s p99 %s; %d reports (%d failed); %d failed polls\n",
			s.Beats, s.BeatErrors, s.BeatP50.Round(time.Microsecond), s.BeatP99.Round(time.Microsecond), s.Reports, s.ReportErrors, s.PollErrors)
		fl.ResetStats()
	}
}
