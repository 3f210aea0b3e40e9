package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) secgroupCmd() *cobra.Command {
	rule := group("rule", "Add and delete rules of a security group", a.ruleAddCmd(), a.ruleDeleteCmd())
	return group("secgroup", "Create, list, show and delete security groups (stateful; default deny ingress)",
		a.secgroupCreateCmd(), a.secgroupListCmd(), a.secgroupShowCmd(), a.secgroupDeleteCmd(), rule)
}

func ruleTable(w io.Writer, g *model.SecurityGroup) {
	row(w, "GROUP", "RULE", "DIRECTION", "PROTOCOL", "PORTS", "PEER")
	for _, r := range g.Spec.Rules {
		ports := "-"
		if r.PortMin != 0 {
			ports = strconv.Itoa(r.PortMin)
			if r.PortMax != r.PortMin {
				ports += "-" + strconv.Itoa(r.PortMax)
			}
		}
		peer := "any"
		switch {
		case r.CIDR != "":
			peer = r.CIDR
		case r.Group != "":
			peer = "group " + r.Group
		}
		row(w, g.Name, r.ID, r.Direction, r.Protocol, ports, peer)
	}
	if len(g.Spec.Rules) == 0 {
		row(w, g.Name, "-", "(no rules: nothing in, nothing new out)", "", "", "")
	}
}

func (a *app) secgroupCreateCmd() *cobra.Command {
	var desc string
	var noEgress bool
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a security group (with one rule allowing all egress, unless --no-default-egress)",
		Example: `  vpool secgroup create web && vpool secgroup rule add web --direction ingress --protocol tcp --port 80`,
		Args:    exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			g, err := c.CreateSecurityGroup(cmd.Context(), a.cfg.Project, api.SecurityGroupCreateRequest{Name: args[0], Description: desc, NoDefaultEgress: noEgress})
			if err != nil {
				return err
			}
			return a.print(cmd, g, func(w io.Writer) { ruleTable(w, g) })
		},
	}
	cmd.Flags().StringVar(&desc, "description", "", "free text")
	cmd.Flags().BoolVar(&noEgress, "no-default-egress", false, "start without the allow-all egress rule")
	return cmd
}

func (a *app) secgroupListCmd() *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List security groups", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			gs, err := c.ListSecurityGroups(cmd.Context(), a.cfg.Project)
			if err != nil {
				return err
			}
			return a.print(cmd, gs, func(w io.Writer) {
				row(w, "NAME", "RULES", "DESCRIPTION")
				for _, g := range gs {
					row(w, g.Name, len(g.Spec.Rules), orDash(g.Spec.Description))
				}
			})
		},
	}
}

func (a *app) secgroupShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show a security group's rules", Args: exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			g, err := c.GetSecurityGroup(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, g, func(w io.Writer) { ruleTable(w, g) })
		},
	}
}

func (a *app) secgroupDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Short: "Delete a security group no NIC or rule uses", Args: exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteSecurityGroup(cmd.Context(), a.cfg.Project, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(outw(cmd), "security group %s deleted\n", args[0])
			return nil
		},
	}
}

// parsePorts reads "80" or "8000-8100".
func parsePorts(s string) (lo, hi int, err error) {
	a, b, rng := strings.Cut(s, "-")
	if lo, err = strconv.Atoi(a); err != nil {
		return 0, 0, usagef("--port: %q is not a port or range (e.g. 80 or 8000-8100)", s)
	}
	hi = lo
	if rng {
		if hi, err = strconv.Atoi(b); err != nil {
			return 0, 0, usagef("--port: %q is not a port or range (e.g. 80 or 8000-8100)", s)
		}
	}
	return lo, hi, nil
}

func (a *app) ruleAddCmd() *cobra.Command {
	var r model.Rule
	var ports string
	cmd := &cobra.Command{
		Use:   "add GROUP --direction ingress|egress [--protocol tcp|udp|icmp|any] [--port P[-Q]] [--cidr CIDR | --group G]",
		Short: "Allow a kind of traffic (new connections; replies always pass)",
		Example: `  vpool secgroup rule add web --direction ingress --protocol tcp --port 443
  vpool secgroup rule add db --direction ingress --protocol tcp --port 5432 --group web
  vpool secgroup rule add ssh --direction ingress --protocol tcp --port 22 --cidr 10.0.0.0/8`,
		Args: exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ports != "" {
				var err error
				if r.PortMin, r.PortMax, err = parsePorts(ports); err != nil {
					return err
				}
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			g, err := c.AddRule(cmd.Context(), a.cfg.Project, args[0], r)
			if err != nil {
				return err
			}
			return a.print(cmd, g, func(w io.Writer) { ruleTable(w, g) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&r.Direction, "direction", "ingress", "ingress or egress")
	f.StringVar(&r.Protocol, "protocol", "any", "tcp, udp, icmp or any")
	f.StringVar(&ports, "port", "", "destination port or range (tcp, udp)")
	f.StringVar(&r.CIDR, "cidr", "", "the peer: an IPv4 prefix")
	f.StringVar(&r.Group, "group", "", "the peer: the members of another group of the project")
	return cmd
}

func (a *app) ruleDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delete GROUP RULE-ID", Short: "Delete a rule (new connections it allowed are cut at once)", Args: exactArgs(2, "a group name and a rule id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			g, err := c.DeleteRule(cmd.Context(), a.cfg.Project, args[0], args[1])
			if err != nil {
				return err
			}
			return a.print(cmd, g, func(w io.Writer) { ruleTable(w, g) })
		},
	}
}
