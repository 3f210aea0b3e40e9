package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

// addBalancerCommands adds `lb` and `group`.
func (a *app) addBalancerCommands(root *cobra.Command) {
	root.AddCommand(
		group("lb", "Create, list, show, change and delete L4 load balancers (HAProxy on a host, a virtual IP on a network)",
			a.lbCreateCmd(), a.lbListCmd(), a.lbShowCmd(), a.lbSetCmd(), a.lbDeleteCmd()),
		group("group", "Create, list, show, change and delete scaling groups of VMs",
			a.groupCreateCmd(), a.groupListCmd(), a.groupShowCmd(), a.groupSetCmd(), a.groupDeleteCmd()))
}

// parseMembers reads --members: "group:NAME" or VM names separated by commas.
func parseMembers(s string) model.LBMembers {
	if g, ok := strings.CutPrefix(s, "group:"); ok {
		return model.LBMembers{Group: g}
	}
	var m model.LBMembers
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			m.VMs = append(m.VMs, v)
		}
	}
	return m
}

func (a *app) lbCreateCmd() *cobra.Command {
	var network, members, alg, ip string
	var listen, memberPort, drain int
	var w waitOpts
	cmd := &cobra.Command{
		Use:   "create NAME --network N --listen PORT --members group:G|VM,VM... [--algorithm roundrobin|leastconn|source]",
		Short: "Create a load balancer and wait until its host serves it",
		Example: `  vpool lb create web --network lan --listen 80 --members web1,web2
  vpool lb create api --network lan --listen 443 --member-port 8443 --members group:api --algorithm leastconn`,
		Args: exactArgs(1, "one balancer name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if network == "" || listen == 0 {
				return usagef("lb create: --network and --listen are required")
			}
			spec := model.LBSpec{Network: network, Listen: listen, MemberPort: memberPort, Algorithm: alg, IP: ip,
				Members: parseMembers(members), DrainTimeout: drain}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			b, err := c.CreateLB(cmd.Context(), a.cfg.Project, api.LBCreateRequest{Name: args[0], Spec: spec})
			if err != nil {
				return err
			}
			if w.enabled() {
				if b, err = a.waitLB(cmd, c, args[0]); err != nil {
					return err
				}
			}
			return a.print(cmd, b, func(w io.Writer) { lbTable(w, []model.LoadBalancer{*b}) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&network, "network", "", "the network of the virtual IP (its members are reached on it)")
	f.IntVar(&listen, "listen", 0, "TCP port of the virtual IP")
	f.IntVar(&memberPort, "member-port", 0, "the members' port (default: --listen)")
	f.StringVar(&members, "members", "", "group:NAME for a scaling group's members, or VM names separated by commas")
	f.StringVar(&alg, "algorithm", model.LBRoundRobin, "roundrobin, leastconn or source")
	f.StringVar(&ip, "ip", "", "a fixed virtual IP (default: a free address of the network)")
	f.IntVar(&drain, "drain-timeout", 0, "seconds a removed member keeps its connections (default 30)")
	w.flags(cmd, "a host serves the balancer")
	return cmd
}

// waitLB follows a new balancer until its host reports it running.
func (a *app) waitLB(cmd *cobra.Command, c *client.Client, name string) (*model.LoadBalancer, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
	defer cancel()
	bar := newProgressBar(errw(cmd), a.env.now)
	defer bar.done()
	for {
		b, err := c.GetLB(ctx, a.cfg.Project, name)
		if err != nil {
			return nil, fmt.Errorf("waiting for load balancer %s: %w", name, err)
		}
		o := b.Status.Observed
		switch {
		case b.Status.Host == "":
			bar.show("pending", fmt.Sprintf("lb %s: waiting for a host: %s", name, orDash(b.Status.Placement)))
		case o == nil || !o.Running:
			msg := "starting HAProxy"
			if o != nil && o.Error != "" {
				msg = o.Error
			}
			bar.show("starting", fmt.Sprintf("lb %s: on %s, %s", name, b.Status.Host, msg))
		default:
			return b, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for load balancer %s: %w (vpool lb show %s; --no-wait returns at once)", name, ctx.Err(), name)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func lbTable(w io.Writer, bs []model.LoadBalancer) {
	row(w, "NAME", "VIP", "NETWORK", "ALGORITHM", "HOST", "PHASE", "MEMBERS")
	for _, b := range bs {
		up, n := 0, 0
		for _, m := range b.Status.Members {
			if m.State != model.MemberActive {
				continue
			}
			n++
			if o := b.Status.Observed; o != nil && o.Members[m.VM].Health == "up" {
				up++
			}
		}
		row(w, b.Name, fmt.Sprintf("%s:%d", b.Status.VIP, b.Spec.Listen), b.Spec.Network, b.Spec.Algorithm, orDash(b.Status.Host),
			b.Status.Phase, fmt.Sprintf("%d/%d up", up, n))
	}
}

func lbMembersTable(w io.Writer, b *model.LoadBalancer) {
	lbTable(w, []model.LoadBalancer{*b})
	fmt.Fprintf(w, "\nplacement: %s\n", orDash(b.Status.Placement))
	row(w, "MEMBER", "ADDRESS", "STATE", "HEALTH", "CONNECTIONS")
	for _, m := range b.Status.Members {
		h := model.LBMemberHealth{Health: "unknown"}
		if o := b.Status.Observed; o != nil {
			if x, ok := o.Members[m.VM]; ok {
				h = x
			}
		}
		row(w, m.VM, fmt.Sprintf("%s:%d", m.IP, b.Spec.MemberPort), m.State, h.Health, h.Sessions)
	}
}

func (a *app) lbListCmd() *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List load balancers", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			bs, err := c.ListLBs(cmd.Context(), a.cfg.Project)
			if err != nil {
				return err
			}
			return a.print(cmd, bs, func(w io.Writer) { lbTable(w, bs) })
		},
	}
}

func (a *app) lbShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show a load balancer, its host and its members' health", Args: exactArgs(1, "one balancer name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			b, err := c.GetLB(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, b, func(w io.Writer) { lbMembersTable(w, b) })
		},
	}
}

func (a *app) lbSetCmd() *cobra.Command {
	var members, alg string
	cmd := &cobra.Command{
		Use:     "set NAME [--members group:G|VM,VM...] [--algorithm A]",
		Short:   "Change a balancer's members (removed ones drain first) or algorithm",
		Example: `  vpool lb set web --members web1,web3`,
		Args:    exactArgs(1, "one balancer name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.LBPatchRequest
			if cmd.Flags().Changed("members") {
				m := parseMembers(members)
				req.Members = &m
			}
			if cmd.Flags().Changed("algorithm") {
				req.Algorithm = &alg
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			b, err := c.PatchLB(cmd.Context(), a.cfg.Project, args[0], req)
			if err != nil {
				return err
			}
			return a.print(cmd, b, func(w io.Writer) { lbMembersTable(w, b) })
		},
	}
	cmd.Flags().StringVar(&members, "members", "", "group:NAME, or VM names separated by commas")
	cmd.Flags().StringVar(&alg, "algorithm", "", "roundrobin, leastconn or source")
	return cmd
}

func (a *app) lbDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Short: "Delete a load balancer and release its address", Args: exactArgs(1, "one balancer name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteLB(cmd.Context(), a.cfg.Project, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(outw(cmd), "load balancer %s is being deleted\n", args[0])
			return nil
		},
	}
}

// readTemplate reads --template: inline JSON, or a YAML or JSON file.
func readTemplate(s string) (model.VMSpec, error) {
	var spec model.VMSpec
	b := []byte(s)
	if !strings.HasPrefix(strings.TrimSpace(s), "{") {
		var err error
		if b, err = os.ReadFile(s); err != nil {
			return spec, usagef("--template: %v (give a YAML or JSON file of a VM spec, or inline JSON)", err)
		}
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return spec, usagef("--template: %v", err)
	}
	if j, err = sizesToBytes(j); err != nil {
		return spec, err
	}
	dec := json.NewDecoder(strings.NewReader(string(j)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return spec, usagef("--template: %v (fields are those of a VM spec: vcpus, memory, image, nics, ...)", err)
	}
	return spec, nil
}

// parsePercent reads 60% or 60.
func parsePercent(flag, s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil {
		return 0, usagef("--%s: %q is not a percentage, e.g. 60%%", flag, s)
	}
	return v, nil
}

// sizesToBytes lets a template write memory and disk sizes with units
// ("256MiB"), as the vm create flags do.
func sizesToBytes(j []byte) ([]byte, error) {
	var m map[string]any
	if json.Unmarshal(j, &m) != nil {
		return j, nil // the strict decode says what is wrong
	}
	conv := func(obj map[string]any, key, field string) error {
		if s, ok := obj[key].(string); ok {
			v, err := model.ParseBytes(s)
			if err != nil {
				return usagef("--template: %s: %v", field, err)
			}
			obj[key] = int64(v)
		}
		return nil
	}
	if err := conv(m, "memory", "memory"); err != nil {
		return nil, err
	}
	if ds, ok := m["disks"].([]any); ok {
		for i, d := range ds {
			if dm, ok := d.(map[string]any); ok {
				if err := conv(dm, "size", fmt.Sprintf("disks[%d].size", i)); err != nil {
					return nil, err
				}
			}
		}
	}
	return json.Marshal(m)
}
