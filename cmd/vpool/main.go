// Command vpool is vpool's one binary: the CLI (vm, host, project, token,
// events, cluster ...), `vpool server` (the control plane), `vpool agent`
// (one per host), `vpool dev` (everything on one machine) and `vpool sim`.
// It only wires flags to the packages that do the work.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/cli"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	servePprof()
	root := cli.NewRoot(version)
	root.AddCommand(serverCmd(), agentCmd(), devCmd(), fleetCmd())
	addSim(root)
	os.Exit(cli.Main(root, os.Args[1:]))
}

// logFlags adds --log-level and --log-format and returns a constructor.
func logFlags(cmd *cobra.Command) func() (*slog.Logger, error) { return logFlagsAt(cmd, "info") }

// logFlagsAt is logFlags with another default level.
func logFlagsAt(cmd *cobra.Command, def string) func() (*slog.Logger, error) {
	level := cmd.Flags().String("log-level", def, "log level: debug, info, warn or error")
	format := cmd.Flags().String("log-format", "text", "log format: text or json")
	return func() (*slog.Logger, error) {
		var l slog.Level
		if err := l.UnmarshalText([]byte(*level)); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
		}
		opts := &slog.HandlerOptions{Level: l}
		switch *format {
		case "text":
			return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
		case "json":
			return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
		default:
			return nil, fmt.Errorf("--log-format %q: want text or json", *format)
		}
	}
}

// qemuDriver is the QEMU driver factory handed to devenv.
func qemuDriver(o devenv.QEMUOptions) (hypervisor.Driver, error) {
	return qemu.New(qemu.Config{StateDir: o.StateDir, HostID: o.HostID, Logger: o.Logger, Pools: o.Pools, MigrationHost: o.MigrationHost,
		CPUModel: o.CPUModel, Machine: o.Machine, VMsCPUShares: o.VMsCPUShares, MigrationCPUBoost: o.MigrationCPUBoost,
		MigrationMultifdChannels: o.MigrationMultifdChannels, VMUIDBase: o.VMUIDBase, VMUIDCount: o.VMUIDCount,
		HideFromVMs: o.HideFromVMs})
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
