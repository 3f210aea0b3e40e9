package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
)

// memberCmd is `vpool cluster member`: the control plane's servers
// (docs/ha.md).
func (a *app) memberCmd() *cobra.Command {
	return group("member", "List, add and remove the control plane's servers", a.memberListCmd(), a.memberAddCmd(), a.memberRemoveCmd())
}

func (a *app) memberListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the servers: store members, which one leads raft, which runs the controllers, and their addresses",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			ml, err := c.Members(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd, ml, func(w io.Writer) {
				row(w, "NAME", "STATE", "ROLE", "API", "AGENTS", "PEER")
				for _, m := range ml.Items {
					state, api, agents := "down", "-", "-"
					if m.Server != nil {
						state, api, agents = "up", m.Server.API, m.Server.Agent
					}
					if m.Learner {
						state = "joining"
					}
					row(w, orDash(m.Name), state, memberRole(m), api, agents, orDash(strings.Join(m.PeerURLs, ",")))
				}
			})
		},
	}
}

func memberRole(m api.Member) string {
	var roles []string
	if m.Leader {
		roles = append(roles, "controllers")
	}
	if m.RaftLeader {
		roles = append(roles, "raft-leader")
	}
	return orDash(strings.Join(roles, ","))
}

func (a *app) memberAddCmd() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Issue a single-use token with which one new server, NAME, joins the control plane",
		Long: `Issue a server join token: single use, bound to the new server's name, and
pinning the cluster CA. On the new server, with the token in a 0600 file:

  vpool server --name NAME --data-dir DIR --peer-url https://ADDRESS:2380 \
    --join https://RUNNING-SERVER:8441 --join-token-file FILE

It reaches a running server's agent listener over TLS it checks against
the pinned CA, gets the store's CA, the seal key and the membership, and
starts its store member as a learner; a running server promotes it once
it has caught up. The token is shown only once: it hands over the keys of
the cluster.`,
		Args: exactArgs(1, "the new server's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			req := api.MemberAddRequest{Name: args[0]}
			if cmd.Flags().Changed("ttl") {
				req.TTL = ttl.String()
			}
			res, err := c.AddMember(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd, res, func(w io.Writer) {
				fmt.Fprintln(w, res.Token)
				fmt.Fprintf(errw(cmd), "Server join token for %s, valid until %s; it is shown only once.\n"+
					"On the new server: umask 077; save it to a file and run\n"+
					"  vpool server --name %s --peer-url https://ADDRESS:PORT --join %s --join-token-file FILE\n",
					res.Name, res.ExpiresAt.UTC().Format(time.RFC3339), res.Name, orDash(strings.Join(res.Join, ",")))
			})
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid (at most 168h)")
	return cmd
}

func (a *app) memberRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove a server's store member (that server stops); refused when the others would lose their quorum",
		Args:    exactArgs(1, "a server name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.RemoveMember(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(outw(cmd), "member %s: removed\n", args[0])
			return nil
		},
	}
}
