package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) tokenCmd() *cobra.Command {
	return group("token", "Create, list and revoke API tokens",
		a.tokenCreateCmd(), a.tokenListCmd(), a.tokenRevokeCmd())
}

func (a *app) tokenCreateCmd() *cobra.Command {
	var role string
	var scopes []string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a token; its secret is printed once, on stdout",
		Example: `  vpool token create --project team-a --role member --ttl 720h
  export VPOOL_TOKEN=$(vpool token create --project team-a)
  vpool token create --project team-a --scope vms:power --scope group:web --ttl 24h
  vpool token create --role admin --scope read       # an auditor's token`,
		Args: exactArgs(0, "no arguments (name the project with --project)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			req := api.TokenCreateRequest{Project: a.cfg.Project, Role: model.Role(role), Scopes: scopes}
			if req.Role == model.RoleMetrics {
				req.Project = "" // a scraper's token is cluster-wide
			}
			if cmd.Flags().Changed("ttl") {
				req.TTL = ttl.String()
			}
			res, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd, res, func(w io.Writer) {
				fmt.Fprintln(w, res.Secret)
				t := res.Token
				exp := "never"
				if !t.ExpiresAt.IsZero() {
					exp = t.ExpiresAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(errw(cmd), "Token %s (role %s, project %s, expires %s). The secret above is shown only once.\n",
					t.ID, orDash(string(t.Role)), orDash(t.Project), exp)
			})
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, member, viewer, or metrics (reads /metrics only; no project) (default member)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the token is valid (default: no expiry)")
	cmd.Flags().StringArrayVar(&scopes, "scope", nil, "narrow the role (repeat): read, vms:read, vms:power, vms:write, group:NAME (VMs labelled vpool.io/group=NAME)")
	return cmd
}

func (a *app) tokenListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tokens (never their secrets)",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			ts, err := c.ListTokens(cmd.Context(), a.project)
			if err != nil {
				return err
			}
			if ts == nil {
				ts = []model.Token{}
			}
			sort.Slice(ts, func(i, j int) bool { return ts[i].ID < ts[j].ID })
			now := a.env.now()
			return a.print(cmd, ts, func(w io.Writer) {
				row(w, "ID", "PROJECT", "ROLE", "SCOPES", "PURPOSE", "AGE", "EXPIRES")
				for _, t := range ts {
					exp := "never"
					if !t.ExpiresAt.IsZero() {
						exp = t.ExpiresAt.UTC().Format(time.RFC3339)
					}
					row(w, t.ID, orDash(t.Project), t.Role, orDash(strings.Join(t.Scopes, ",")), orDash(t.Purpose), age(now, t.CreatedAt), exp)
				}
			})
		},
	}
}

func (a *app) tokenRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "revoke ID...",
		Aliases: []string{"delete", "rm"},
		Short:   "Revoke tokens",
		Args:    minArgs(1, "at least one token ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return forEach(cmd, args, "token", func(id string) (string, error) {
				return "token " + id + ": revoked", c.RevokeToken(cmd.Context(), id)
			})
		},
	}
}
