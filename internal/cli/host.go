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

func (a *app) hostCmd() *cobra.Command {
	return group("host", "List, show, label, cordon and remove hosts; issue join tokens",
		a.hostListCmd(), a.hostShowCmd(), a.hostLabelCmd(),
		a.hostCordonCmd("cordon", true), a.hostCordonCmd("uncordon", false),
		a.hostJoinTokenCmd(),
		a.hostRekeyCmd(), a.hostDeleteCmd())
}

func (a *app) hostListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List hosts",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			out, err := a.listStream(cmd, hostHeader...)
			if err != nil {
				return err
			}
			now := a.env.now()
			err = c.HostPages(cmd.Context(), 0, func(hosts []model.Host) error {
				sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
				items, rows := make([]any, len(hosts)), make([][]string, len(hosts))
				for i := range hosts {
					items[i], rows[i] = hosts[i], hostRow(&hosts[i], now)
				}
				out.page(items, rows)
				return out.err
			})
			if err != nil {
				return err
			}
			return out.close()
		},
	}
}

// hostState renders a host's state, with ",cordoned" when it takes no new VMs.
func hostState(h *model.Host) string {
	s := orDash(string(h.State))
	if h.Cordoned {
		s += ",cordoned"
	}
	return s
}

// hostHeader and hostRow are the host table: CPUS, MEMORY and DISK are
// allocated/capacity.
var hostHeader = []string{"NAME", "STATE", "DRIVER", "VMS", "CPUS", "MEMORY", "DISK", "CPU%", "SEEN"}

func hostRow(h *model.Host, now time.Time) []string {
	return []string{h.Name, hostState(h), orDash(h.Driver), fmt.Sprint(h.VMs),
		fmt.Sprintf("%d/%d", h.Allocated.CPUs, h.Capacity.CPUs),
		h.Allocated.Memory.String() + "/" + h.Capacity.Memory.String(),
		h.Allocated.Disk.String() + "/" + h.Capacity.Disk.String(),
		fmt.Sprintf("%.0f", h.Usage.CPUPercent), age(now, h.LastSeen)}
}

func (a *app) hostShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get", "describe"},
		Short:   "Show a host",
		Args:    exactArgs(1, "one host name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			h, err := c.GetHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, h, func(w io.Writer) { a.describeHost(w, h) })
		},
	}
}

func (a *app) describeHost(w io.Writer, h *model.Host) {
	now := a.env.now()
	field(w, "Name", h.Name)
	field(w, "State", hostState(h))
	field(w, "Driver", strings.TrimSpace(h.Driver+" "+h.Accel))
	field(w, "Address", h.Address)
	field(w, "Agent version", h.AgentVer)
	field(w, "Last seen", stamp(now, h.LastSeen))
	field(w, "Joined", stamp(now, h.CreatedAt))
	field(w, "Labels", kv(h.Labels))
	field(w, "VMs", h.VMs)
	field(w, "CPUs", fmt.Sprintf("%d allocated of %d", h.Allocated.CPUs, h.Capacity.CPUs))
	field(w, "Memory", fmt.Sprintf("%s allocated of %s", h.Allocated.Memory, h.Capacity.Memory))
	field(w, "Disk", fmt.Sprintf("%s allocated of %s", h.Allocated.Disk, h.Capacity.Disk))
	if r := h.Ratios; r != (model.Ratios{}) {
		field(w, "Ratios", fmt.Sprintf("cpu %s, memory %s, disk %s (0 = cluster default)", num(r.CPU), num(r.Memory), num(r.Disk)))
	}
	if h.Balancers > 0 {
		field(w, "Balancers", fmt.Sprintf("%d load balancer(s), each holding %dm CPU and %s back from placement", h.Balancers, model.LBReserveCPUMilli, model.LBReserveMemory))
	}
	field(w, "Usage", fmt.Sprintf("cpu %.1f%%, memory %s, disk %s", h.Usage.CPUPercent, h.Usage.MemoryUsed, h.Usage.DiskUsed))
	for _, p := range h.Pools {
		field(w, "Pool "+p.Name, strings.TrimSpace(fmt.Sprintf("tier=%s free=%s", orDash(p.Tier), p.Free)))
	}
}

func (a *app) patchHost(cmd *cobra.Command, name string, req api.HostPatchRequest) (*model.Host, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	return c.PatchHost(cmd.Context(), name, req)
}

func (a *app) hostLabelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "label NAME KEY=VALUE... | KEY-...",
		Short: "Add, change (KEY=VALUE) or remove (KEY-) labels of a host",
		Example: `  vpool host label node1 zone=a ssd=true
  vpool host label node1 ssd-`,
		Args: minArgs(2, "a host name and at least one KEY=VALUE or KEY-"),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, remove := map[string]string{}, map[string]bool{}
			for _, arg := range args[1:] {
				if k, ok := strings.CutSuffix(arg, "-"); ok && !strings.Contains(arg, "=") {
					remove[k] = true
					continue
				}
				k, v, ok := strings.Cut(arg, "=")
				if !ok || k == "" {
					return usagef("host label: %q is neither KEY=VALUE nor KEY-", arg)
				}
				set[k] = v
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			h, err := c.GetHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			labels := map[string]string{}
			for k, v := range h.Labels {
				if !remove[k] {
					labels[k] = v
				}
			}
			for k, v := range set {
				labels[k] = v
			}
			h, err = c.PatchHost(cmd.Context(), args[0], api.HostPatchRequest{Labels: labels})
			if err != nil {
				return err
			}
			return a.print(cmd, h, func(w io.Writer) { fmt.Fprintf(w, "host %s: labels %s\n", h.Name, orDash(kv(h.Labels))) })
		},
	}
}

func (a *app) hostCordonCmd(verb string, cordon bool) *cobra.Command {
	short := "Stop placing new VMs on hosts"
	if !cordon {
		short = "Place new VMs on hosts again"
	}
	return &cobra.Command{
		Use:   verb + " NAME...",
		Short: short,
		Args:  minArgs(1, "at least one host name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return forEach(cmd, args, "host", func(name string) (string, error) {
				h, err := a.patchHost(cmd, name, api.HostPatchRequest{Cordoned: &cordon})
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("host %s: %s", h.Name, hostState(h)), nil
			})
		},
	}
}

func (a *app) hostJoinTokenCmd() *cobra.Command {
	var ttl time.Duration
	var uses int
	cmd := &cobra.Command{
		Use:   "join-token",
		Short: "Issue a token with which new hosts' agents join the pool (single use unless --uses)",
		Long: `Issue a join token. Each join consumes one use (--uses, default 1); a
used-up or expired token joins nothing. A token joins only names not
joined yet: to give a joined host a new key, use 'vpool host rekey'.

Hand the token to the agent in a file (--join-token-file, mode 0600) or
the environment (VPOOL_JOIN_TOKEN), never on its command line, where
every local user sees it in ps.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			req := api.JoinTokenRequest{Uses: uses}
			if cmd.Flags().Changed("ttl") {
				req.TTL = ttl.String()
			}
			jt, err := c.CreateJoinToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.printJoinToken(cmd, jt)
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid (at most 168h)")
	cmd.Flags().IntVar(&uses, "uses", 1, fmt.Sprintf("how many hosts may join with it (1-%d)", api.MaxJoinTokenUses))
	return cmd
}

func (a *app) hostRekeyCmd() *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "rekey NAME",
		Short: "Revoke a host's certificate and issue a token with which that host alone joins again",
		Long: `Revoke the host's certificate now and issue a single-use join token bound
to its name: for a lost or stolen key, an expired certificate or a
reinstalled host. The host stays in the pool with its VMs and settings,
but its agent is refused until it joins again with this token (start it
with the token in --join-token-file or VPOOL_JOIN_TOKEN; it replaces the
identity in its state dir).`,
		Args: exactArgs(1, "a host name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			req := api.HostRekeyRequest{}
			if cmd.Flags().Changed("ttl") {
				req.TTL = ttl.String()
			}
			jt, err := c.RekeyHost(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			return a.printJoinToken(cmd, jt)
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid (at most 168h)")
	return cmd
}

// printJoinToken prints a join token alone on stdout (so that it can go
// straight to a file) and what it is for on stderr.
func (a *app) printJoinToken(cmd *cobra.Command, jt *api.JoinTokenResponse) error {
	return a.print(cmd, jt, func(w io.Writer) {
		fmt.Fprintln(w, jt.Token)
		what := fmt.Sprintf("Join token for %d host(s)", jt.Uses)
		if jt.Host != "" {
			what = "Re-key token for host " + jt.Host + " (its old certificate is revoked)"
		}
		fmt.Fprintf(errw(cmd), "%s, agent address %s, valid until %s; it is shown only once.\n"+
			"On the host: umask 077; save it to a file and run 'vpool agent --join-token-file FILE' (or set VPOOL_JOIN_TOKEN).\n",
			what, orDash(jt.AgentAddr), jt.ExpiresAt.UTC().Format(time.RFC3339))
	})
}

func (a *app) hostDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Forget hosts that have no VMs",
		Args:    minArgs(1, "at least one host name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return forEach(cmd, args, "host", func(name string) (string, error) {
				return "host " + name + ": deleted", c.DeleteHost(cmd.Context(), name)
			})
		},
	}
}
