package cli

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"
)

// projectUseCmd is `vpool project use [NAME]`: the project later commands
// work in, kept in the client config (as `incus project switch` or
// `kubectl config set-context --current --namespace` do). --project and
// VPOOL_PROJECT still win for one command.
func (a *app) projectUseCmd() *cobra.Command {
	var clear bool
	cmd := &cobra.Command{
		Use:   "use [NAME]",
		Short: "Set the project later commands work in (kept in the client config); without NAME, show it",
		Example: `  vpool project use team-a
  vpool project use          # which one is in use
  vpool project use --clear  # back to the token's project (an admin's: default)`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 || (clear && len(args) > 0) {
				return usagef("%s wants one project name, or none (with --clear)", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			path := a.cfg.cfgPath
			if len(args) == 0 && !clear {
				p, from := a.cfg.Project, "config "+path
				if a.project != "" {
					from = "--project"
				} else if v, ok := a.env.lookup(EnvProject); ok && v != "" {
					from = "$" + EnvProject
				}
				if p == "" {
					fmt.Fprintln(outw(cmd), "no project set: commands work in the token's project (an admin token's: default)")
					return nil
				}
				fmt.Fprintf(outw(cmd), "%s (from %s)\n", p, from)
				return nil
			}
			name := ""
			if !clear {
				name = args[0]
				if _, err := c.GetProject(cmd.Context(), name); err != nil {
					return err
				}
			}
			cfg, err := ReadConfig(path)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if errors.Is(err, fs.ErrNotExist) {
				cfg.Addr, cfg.Token = a.cfg.Addr, a.cfg.Token // keep what reached the server
			}
			cfg.Project = name
			if err := WriteConfig(path, cfg); err != nil {
				return err
			}
			if clear {
				fmt.Fprintf(outw(cmd), "no project set in %s\n", path)
			} else {
				fmt.Fprintf(outw(cmd), "now working in project %s (set in %s)\n", name, path)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&clear, "clear", false, "forget the project set")
	return cmd
}
