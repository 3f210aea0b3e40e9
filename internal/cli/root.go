package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
)

// env is what the CLI takes from its surroundings; tests replace it.
type env struct {
	lookup    func(string) (string, bool)
	configDir func() (string, error)
	// getwd is the working directory, where the CLI looks for the config
	// of a `vpool dev` (nil: nowhere).
	getwd func() (string, error)
	now   func() time.Time
	// pollMin and pollMax bound --wait polling; zero keeps the client's
	// defaults.
	pollMin, pollMax time.Duration
}

func osEnv() env {
	return env{lookup: os.LookupEnv, configDir: os.UserConfigDir, getwd: os.Getwd, now: time.Now}
}

// app holds the global flags and the state of one invocation.
type app struct {
	version string
	env     env

	addr, token, project, output, configFlag, caCert string

	cl  *client.Client
	cfg resolved
}

// NewRoot returns the `vpool` command with every user command (vm, host,
// project, token, events, cluster, version) and the global flags --addr,
// --token, --project, --output/-o, --config and --ca-cert. The caller adds
// its own subcommands (server, agent, dev, sim) and runs it with Main.
func NewRoot(version string) *cobra.Command {
	return newRoot(version, osEnv())
}

func newRoot(version string, e env) *cobra.Command {
	a := &app{version: version, env: e}
	root := &cobra.Command{
		Use:   "vpool",
		Short: "vpool manages a pool of hosts and the virtual machines on them",
		Long: `vpool manages a pool of hosts and the virtual machines on them.

The CLI talks to a vpool server. It finds it, in this order, from the
flags, the environment (VPOOL_ADDR, VPOOL_TOKEN, VPOOL_PROJECT,
VPOOL_CA_CERT), the config file (--config, $VPOOL_CONFIG, the nearest
.vpool/config.json in this directory or above — 'vpool dev' writes it
there — or ~/.config/vpool/config.json) and at last ` + client.DefaultAddr + `.
'vpool project use NAME' sets the project later commands work in.

The dashboard is served by the server under /ui/ (with 'vpool dev':
http://127.0.0.1:8440/ui/); sign in with a token.`,
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageErr(err) })
	pf := root.PersistentFlags()
	pf.StringVar(&a.addr, "addr", "", "server address, e.g. http://127.0.0.1:8440, or several servers' separated by commas, failed over in turn (env "+EnvAddr+")")
	pf.StringVar(&a.token, "token", "", "bearer token (env "+EnvToken+")")
	pf.StringVar(&a.project, "project", "", "project (env "+EnvProject+"; default: the token's project)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	pf.StringVar(&a.configFlag, "config", "", "client config file (env "+EnvConfig+"; default "+configPath(e)+")")
	pf.StringVar(&a.caCert, "ca-cert", "", "CA certificate (PEM file) for https addresses (env "+EnvCACert+")")

	root.AddCommand(a.vmCmd(), a.imageCmd(), a.hostCmd(), a.projectCmd(), a.tokenCmd(), a.eventsCmd(), a.auditCmd(), a.usageCmd(), a.complianceCmd(), a.clusterCmd(), a.balanceCmd(), a.haCmd(), a.versionCmd())
	a.addMigrationCommands(root)
	a.addVMOpCommands(root)
	root.AddCommand(a.backupCmd(), a.drCmd())
	a.addNetworkCommands(root)
	a.addBalancerCommands(root)
	return root
}

// Main runs root with args and returns the process exit code: 0 on
// success, 2 for a usage error (unknown command or flag, bad flag value,
// wrong number of arguments), 1 for any other failure. Errors are printed
// to root's stderr as "error: ...". SIGINT and SIGTERM cancel the
// command's context.
func Main(root *cobra.Command, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, root, args)
}

func run(ctx context.Context, root *cobra.Command, args []string) int {
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	stderr := root.ErrOrStderr()
	fmt.Fprintln(stderr, "error: "+describe(err))
	if isUsage(err) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return 2
	}
	return 1
}

// usageError marks an error in how the command was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErr(err error) error { return usageError{err} }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func isUsage(err error) bool {
	var u usageError
	if errors.As(err, &u) {
		return true
	}
	// cobra's own argument and command errors are plain errors.
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown command ") || strings.HasPrefix(msg, "required flag(s) ") ||
		strings.HasPrefix(msg, "unknown flag") || strings.HasPrefix(msg, "unknown shorthand flag")
}

// describe renders an error for a person: the API's message with the field
// at fault, and a hint for the usual causes.
func describe(err error) string {
	msg := err.Error()
	var apiErr *api.Error
	if errors.As(err, &apiErr) {
		switch apiErr.Code {
		case api.CodeUnauthorized:
			msg += " (check --token, " + EnvToken + " or the config file)"
		}
		return msg
	}
	if strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host") {
		msg += " (is the server running? start one with 'vpool dev', or set --addr / " + EnvAddr + ")"
	}
	return msg
}

// group returns a command that only holds subcommands: alone it prints its
// help; with an unknown subcommand it is a usage error.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
	c.AddCommand(subs...)
	return c
}

// exactArgs and minArgs are cobra's validators returning usage errors.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s wants %s (got %d argument%s)", cmd.CommandPath(), names, len(args), plural(len(args)))
		}
		return nil
	}
}

func minArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s wants %s", cmd.CommandPath(), names)
		}
		return nil
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// stdout and stderr of a command.
func outw(cmd *cobra.Command) io.Writer { return cmd.OutOrStdout() }
func errw(cmd *cobra.Command) io.Writer { return cmd.ErrOrStderr() }

// forEach runs fn for each named object; fn returns the line to print on
// success. With several names, a failure is printed with the object's name
// and the others still run; the command then fails with a summary.
func forEach(cmd *cobra.Command, names []string, what string, fn func(name string) (string, error)) error {
	var failed []error
	for _, name := range names {
		line, err := fn(name)
		if err != nil {
			if len(names) > 1 {
				err = fmt.Errorf("%s %s: %w", what, name, err)
				fmt.Fprintln(errw(cmd), "error: "+describe(err))
			}
			failed = append(failed, err)
			continue
		}
		if line != "" {
			fmt.Fprintln(outw(cmd), line)
		}
	}
	return joinFailures(failed, len(names), what)
}
