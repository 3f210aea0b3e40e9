package cli

import (
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) projectCmd() *cobra.Command {
	return group("project", "Create, list, show and delete projects; set their quotas; choose the one to work in",
		a.projectCreateCmd(), a.projectListCmd(), a.projectShowCmd(), a.projectSetQuotaCmd(), a.projectDeleteCmd(), a.projectUseCmd())
}

// addQuotaFlags adds --quota-vcpus, --quota-memory, --quota-disk and
// --quota-vms (0 = unlimited).
func addQuotaFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.Int("quota-vcpus", 0, "vCPUs the project may hold (0 = unlimited)")
	f.String("quota-memory", "", "memory the project may hold, with a unit (0 = unlimited)")
	f.String("quota-disk", "", "disk the project may hold, with a unit (0 = unlimited)")
	f.Int("quota-vms", 0, "VMs the project may hold (0 = unlimited)")
}

// quotaFromFlags applies the quota flags that were given to q and reports
// whether any was.
func quotaFromFlags(cmd *cobra.Command, q *model.Quota) (bool, error) {
	f := cmd.Flags()
	changed := false
	if f.Changed("quota-vcpus") {
		q.VCPUs, _ = f.GetInt("quota-vcpus")
		changed = true
	}
	if f.Changed("quota-vms") {
		q.VMs, _ = f.GetInt("quota-vms")
		changed = true
	}
	for _, s := range []struct {
		flag string
		dst  *model.Bytes
	}{{"quota-memory", &q.Memory}, {"quota-disk", &q.Disk}} {
		b, ok, err := sizeFlag(cmd, s.flag)
		if err != nil {
			return false, err
		}
		if ok {
			*s.dst = b
			changed = true
		}
	}
	return changed, nil
}

func (a *app) projectCreateCmd() *cobra.Command {
	var desc string
	cmd := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a project",
		Example: `  vpool project create team-a --quota-vcpus 32 --quota-memory 64GiB --quota-vms 20`,
		Args:    exactArgs(1, "one project name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.ProjectCreateRequest{Name: args[0], Description: desc}
			if _, err := quotaFromFlags(cmd, &req.Quota); err != nil {
				return err
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			p, err := c.CreateProject(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd, p, func(w io.Writer) { projectTable(w, []api.ProjectView{*p}) })
		},
	}
	cmd.Flags().StringVar(&desc, "description", "", "what the project is for")
	addQuotaFlags(cmd)
	return cmd
}

// projectTable writes NAME VMS VCPUS MEMORY DISK DESCRIPTION, each
// resource as used/quota ("-" = unlimited).
func projectTable(w io.Writer, ps []api.ProjectView) {
	row(w, "NAME", "VMS", "VCPUS", "MEMORY", "DISK", "DESCRIPTION")
	for _, p := range ps {
		row(w, p.Name, used(p.Usage.VMs, p.Quota.VMs), used(p.Usage.VCPUs, p.Quota.VCPUs),
			used(p.Usage.Memory, p.Quota.Memory), used(p.Usage.Disk, p.Quota.Disk), orDash(p.Description))
	}
}

func (a *app) projectListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List projects with their usage and quotas",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			ps, err := c.ListProjects(cmd.Context())
			if err != nil {
				return err
			}
			if ps == nil {
				ps = []api.ProjectView{}
			}
			sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
			return a.print(cmd, ps, func(w io.Writer) { projectTable(w, ps) })
		},
	}
}

func (a *app) projectShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get", "describe"},
		Short:   "Show a project with its usage and quota",
		Args:    exactArgs(1, "one project name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			p, err := c.GetProject(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, p, func(w io.Writer) { a.describeProject(w, p) })
		},
	}
}

func (a *app) describeProject(w io.Writer, p *api.ProjectView) {
	field(w, "Name", p.Name)
	field(w, "Description", p.Description)
	field(w, "Created", stamp(a.env.now(), p.CreatedAt))
	row(w, "RESOURCE", "USED", "QUOTA")
	limit := func(v string, zero bool) string {
		if zero {
			return "unlimited"
		}
		return v
	}
	q, u := p.Quota, p.Usage
	row(w, "vms", u.VMs, limit(fmt.Sprint(q.VMs), q.VMs == 0))
	row(w, "vcpus", u.VCPUs, limit(fmt.Sprint(q.VCPUs), q.VCPUs == 0))
	row(w, "memory", u.Memory, limit(q.Memory.String(), q.Memory == 0))
	row(w, "disk", u.Disk, limit(q.Disk.String(), q.Disk == 0))
}

func (a *app) projectSetQuotaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "set-quota NAME",
		Short:   "Change a project's quota (only the flags given change; 0 = unlimited)",
		Example: `  vpool project set-quota team-a --quota-vms 50 --quota-memory 128GiB`,
		Args:    exactArgs(1, "one project name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var probe model.Quota
			if changed, err := quotaFromFlags(cmd, &probe); err != nil {
				return err
			} else if !changed {
				return usageErr(fmt.Errorf("project set-quota: %w (--quota-vcpus, --quota-memory, --quota-disk, --quota-vms)", errNothingToChange))
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			cur, err := c.GetProject(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			q := cur.Quota
			if _, err := quotaFromFlags(cmd, &q); err != nil {
				return err
			}
			p, err := c.PatchProject(cmd.Context(), args[0], api.ProjectPatchRequest{Quota: &q})
			if err != nil {
				return err
			}
			return a.print(cmd, p, func(w io.Writer) { projectTable(w, []api.ProjectView{*p}) })
		},
	}
	addQuotaFlags(cmd)
	return cmd
}

func (a *app) projectDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete empty projects",
		Args:    minArgs(1, "at least one project name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return forEach(cmd, args, "project", func(name string) (string, error) {
				return "project " + name + ": deleted", c.DeleteProject(cmd.Context(), name)
			})
		},
	}
}
