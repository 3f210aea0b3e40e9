package cli

import (
	"encoding/csv"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) usageCmd() *cobra.Command {
	return group("usage", "Metered usage, energy and CO2 per project and VM",
		a.usageReportCmd(), a.usageSitesCmd())
}

// parseWhen reads a day (2025-03-01) or an RFC 3339 time.
func parseWhen(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.DateOnly, v); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usagef("--%s: %q is not a day (2025-03-01) or a time (2025-03-01T12:00:00Z)", flag, v)
	}
	return t, nil
}

func (a *app) usageReportCmd() *cobra.Command {
	var from, to string
	var all, vms bool
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Usage per project (and VM) over a range of days: vCPU-hours, GiB-hours, network bytes, kWh, CO2",
		Long: `Report metered usage over [--from, --to): a day counts when it begins in the
range. Months before the previous one are kept as totals only and count
whole. -o csv writes one line per VM (with --vms) or per project.`,
		Example: `  vpool usage report --project team-a --from 2025-03-01 --to 2025-04-01
  vpool usage report --all-projects --vms -o csv > march.csv`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := client.UsageQuery{AllProjects: all, VMs: vms || a.output == "csv"}
			var err error
			if q.From, err = parseWhen("from", from); err != nil {
				return err
			}
			if q.To, err = parseWhen("to", to); err != nil {
				return err
			}
			if cmd.Flags().Changed("project") {
				q.Project = a.cfg.Project
			}
			var c *client.Client
			if a.output == "csv" {
				c, err = a.client()
			} else {
				c, err = a.outputClient()
			}
			if err != nil {
				return err
			}
			rep, err := c.Usage(cmd.Context(), q)
			if err != nil {
				return err
			}
			if a.output == "csv" {
				return writeUsageCSV(outw(cmd), rep)
			}
			return a.print(cmd, rep, func(w io.Writer) { usageTable(w, rep, vms) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "first day (2025-03-01) or time (default: the start of this month)")
	f.StringVar(&to, "to", "", "end, exclusive (default: now)")
	f.BoolVarP(&all, "all-projects", "A", false, "every project (admins)")
	f.BoolVar(&vms, "vms", false, "a line per VM")
	return cmd
}

var usageHeader = []string{"VCPU-H", "MEM-GIB-H", "DISK-GIB-H", "NET-BYTES", "KWH", "CO2-G"}

func figures(f model.UsageFigures) []any {
	return []any{num2(f.VCPUHours), num2(f.MemGiBHours), num2(f.DiskGiBHours), f.NetBytes, num3(f.EnergyKWh), num2(f.CO2Grams)}
}

func num2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
func num3(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

func usageTable(w io.Writer, rep *api.UsageReport, vms bool) {
	row(w, append([]any{"PROJECT", "VM"}, toAny(usageHeader)...)...)
	for _, p := range rep.Projects {
		row(w, append([]any{p.Project, "-"}, figures(p.Total)...)...)
		if !vms {
			continue
		}
		for _, v := range p.VMs {
			name := v.VM
			if v.Deleted {
				name += " (deleted)"
			}
			row(w, append([]any{"", name}, figures(v.UsageFigures)...)...)
		}
	}
	row(w, append([]any{"TOTAL", "-"}, figures(rep.Total)...)...)
	if rep.Monthly {
		fmt.Fprintln(w, "(months before the previous one count whole: their days are not kept)")
	}
}

// writeUsageCSV writes one line per VM: project, vm, deleted, from, to
// and the figures (full precision).
func writeUsageCSV(w io.Writer, rep *api.UsageReport) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"project", "vm", "deleted", "from", "to", "vcpu_hours", "memory_gib_hours", "disk_gib_hours", "network_bytes", "energy_kwh", "co2_grams"})
	projects := append([]api.ProjectUsage(nil), rep.Projects...)
	sort.Slice(projects, func(i, j int) bool { return projects[i].Project < projects[j].Project })
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	for _, p := range projects {
		for _, v := range p.VMs {
			f := v.UsageFigures
			_ = cw.Write([]string{p.Project, v.VM, strconv.FormatBool(v.Deleted), rep.From.UTC().Format(time.RFC3339), rep.To.UTC().Format(time.RFC3339),
				g(f.VCPUHours), g(f.MemGiBHours), g(f.DiskGiBHours), strconv.FormatInt(f.NetBytes, 10), g(f.EnergyKWh), g(f.CO2Grams)})
		}
	}
	cw.Flush()
	return cw.Error()
}

func (a *app) usageSitesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sites [SITE=G_PER_KWH | SITE-]...",
		Short: "Show, set or remove the grid intensity of sites (hosts name theirs with the label vpool.io/site)",
		Example: `  vpool usage sites
  vpool usage sites eu-west=56 us-east=380
  vpool usage sites us-east-`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			var ms *model.MeteringSettings
			if len(args) == 0 {
				ms, err = c.MeteringSettings(cmd.Context())
			} else {
				var p api.MeteringSettingsPatch
				if p.Sites, err = parseSites(args); err != nil {
					return err
				}
				ms, err = c.PatchMeteringSettings(cmd.Context(), p)
			}
			if err != nil {
				return err
			}
			return a.print(cmd, ms, func(w io.Writer) {
				row(w, "SITE", "G/KWH")
				names := make([]string, 0, len(ms.Sites))
				for s := range ms.Sites {
					names = append(names, s)
				}
				sort.Strings(names)
				for _, s := range names {
					row(w, s, num2(ms.Sites[s]))
				}
			})
		},
	}
	return cmd
}

func parseSites(args []string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, a := range args {
		if site, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			out[site] = -1
			continue
		}
		site, v, ok := strings.Cut(a, "=")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || f < 0 {
			return nil, usagef("%q: write SITE=G_PER_KWH (e.g. eu-west=56) or SITE- to remove it", a)
		}
		out[site] = f
	}
	return out, nil
}
