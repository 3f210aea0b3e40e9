package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) groupCreateCmd() *cobra.Command {
	var tmpl, target, lbName, anti string
	var minN, maxN, outCD, inCD int
	var w waitOpts
	cmd := &cobra.Command{
		Use:   "create NAME --template VMSPEC --min N --max M [--target-cpu 60%] [--lb NAME]",
		Short: "Create a scaling group and wait until its minimum is in service",
		Example: `  vpool group create web --template '{"vcpus":1,"memory":"256MiB","image":"busybox","nics":[{"network":"lan","securityGroups":["web"]}]}' \
      --min 2 --max 6 --target-cpu 60% --lb web
  vpool group create batch --template batch.yaml --min 0 --max 20 --anti-affinity hard`,
		Args: exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tmpl == "" || !cmd.Flags().Changed("max") {
				return usagef("group create: --template and --max are required")
			}
			t, err := readTemplate(tmpl)
			if err != nil {
				return err
			}
			spec := model.GroupSpec{Template: t, Min: minN, Max: maxN, LB: lbName, AntiAffinity: anti, ScaleOutCooldown: outCD, ScaleInCooldown: inCD}
			if target != "" {
				if spec.TargetCPU, err = parsePercent("target-cpu", target); err != nil {
					return err
				}
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			g, err := c.CreateGroup(cmd.Context(), a.cfg.Project, api.GroupCreateRequest{Name: args[0], Spec: spec})
			if err != nil {
				return err
			}
			if w.enabled() {
				if g, err = a.waitGroup(cmd, c, args[0]); err != nil {
					return err
				}
			}
			return a.print(cmd, g, func(w io.Writer) { groupTable(w, []model.ScalingGroup{*g}) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&tmpl, "template", "", "the members' VM spec: a YAML or JSON file, or inline JSON")
	f.IntVar(&minN, "min", 1, "fewest members")
	f.IntVar(&maxN, "max", 0, "most members")
	f.StringVar(&target, "target-cpu", "", "members' mean CPU use to track, e.g. 60% (default: off)")
	f.StringVar(&lbName, "lb", "", "a load balancer the members join when running")
	f.StringVar(&anti, "anti-affinity", "soft", "soft (spread where possible) or hard (never two members on one host)")
	f.IntVar(&outCD, "scale-out-cooldown", 0, "seconds between two scale-outs (default 30)")
	f.IntVar(&inCD, "scale-in-cooldown", 0, "seconds before a scale-in after any scaling (default 300)")
	w.flags(cmd, "the group's minimum is in service")
	return cmd
}

// waitGroup follows a group until as many members as it wants are in
// service, showing them as they come.
func (a *app) waitGroup(cmd *cobra.Command, c *client.Client, name string) (*model.ScalingGroup, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
	defer cancel()
	bar := newProgressBar(errw(cmd), a.env.now)
	defer bar.done()
	for {
		g, err := c.GetGroup(ctx, a.cfg.Project, name)
		if err != nil {
			return nil, fmt.Errorf("waiting for scaling group %s: %w", name, err)
		}
		in := inService(g)
		if in >= g.Status.Desired && len(g.Status.Members) == in {
			return g, nil
		}
		line := fmt.Sprintf("group %s: %s %d/%d in service", name, bar2(in, g.Status.Desired), in, g.Status.Desired)
		if g.Status.Error != "" {
			line += ": " + g.Status.Error
		}
		bar.show(fmt.Sprint(in), line)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for scaling group %s: %w (vpool group show %s; --no-wait returns at once)", name, ctx.Err(), name)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func bar2(n, of int) string {
	if of == 0 {
		return bar(1, 20)
	}
	return bar(float64(n)/float64(of), 20)
}

func inService(g *model.ScalingGroup) int {
	n := 0
	for _, m := range g.Status.Members {
		if m.State == model.GroupMemberInService {
			n++
		}
	}
	return n
}

func groupTable(w io.Writer, gs []model.ScalingGroup) {
	row(w, "NAME", "MIN", "MAX", "DESIRED", "IN SERVICE", "TARGET CPU", "CPU", "LB")
	for _, g := range gs {
		target := "-"
		if g.Spec.TargetCPU > 0 {
			target = fmt.Sprintf("%.0f%%", g.Spec.TargetCPU)
		}
		row(w, g.Name, g.Spec.Min, g.Spec.Max, g.Status.Desired, inService(&g), target, fmt.Sprintf("%.0f%%", g.Status.CPU), orDash(g.Spec.LB))
	}
}

func (a *app) groupListCmd() *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List scaling groups", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			gs, err := c.ListGroups(cmd.Context(), a.cfg.Project)
			if err != nil {
				return err
			}
			return a.print(cmd, gs, func(w io.Writer) { groupTable(w, gs) })
		},
	}
}

func (a *app) groupShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show a scaling group, its members and its last decision", Args: exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			g, err := c.GetGroup(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, g, func(w io.Writer) {
				groupTable(w, []model.ScalingGroup{*g})
				fmt.Fprintf(w, "\nlast decision: %s\n", orDash(g.Status.Reason))
				if g.Status.Error != "" {
					fmt.Fprintf(w, "error: %s\n", g.Status.Error)
				}
				row(w, "MEMBER", "STATE", "SINCE")
				for _, m := range g.Status.Members {
					row(w, m.VM, m.State, m.Since.Format(time.RFC3339))
				}
			})
		},
	}
}

func (a *app) groupSetCmd() *cobra.Command {
	var minN, maxN int
	var target string
	cmd := &cobra.Command{
		Use: "set NAME [--min N] [--max M] [--target-cpu P%]", Short: "Change a scaling group's bounds or CPU target", Args: exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.GroupPatchRequest
			if cmd.Flags().Changed("min") {
				req.Min = &minN
			}
			if cmd.Flags().Changed("max") {
				req.Max = &maxN
			}
			if cmd.Flags().Changed("target-cpu") {
				v, err := parsePercent("target-cpu", target)
				if err != nil {
					return err
				}
				req.TargetCPU = &v
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			g, err := c.PatchGroup(cmd.Context(), a.cfg.Project, args[0], req)
			if err != nil {
				return err
			}
			return a.print(cmd, g, func(w io.Writer) { groupTable(w, []model.ScalingGroup{*g}) })
		},
	}
	cmd.Flags().IntVar(&minN, "min", 0, "fewest members")
	cmd.Flags().IntVar(&maxN, "max", 0, "most members")
	cmd.Flags().StringVar(&target, "target-cpu", "", "members' mean CPU use to track, e.g. 60% (0 turns it off)")
	return cmd
}

func (a *app) groupDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Short: "Delete a scaling group: its members drain from their balancers, then are deleted", Args: exactArgs(1, "one group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteGroup(cmd.Context(), a.cfg.Project, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(outw(cmd), "scaling group %s is being deleted\n", args[0])
			return nil
		},
	}
}
