package simcmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/simulate"
	"github.com/vpool/vpool/internal/trace"
)

// ErrUsage reports bad flags.
var ErrUsage = errors.New("sim: usage")

type options struct {
	trace, setup, policy, output, svg, order string
	hosts                                    int
	seed                                     uint64
	cpuRatio, memRatio                       float64
	quiet                                    bool
}

// New returns the `sim` command.
func New() *cobra.Command {
	o := &options{}
	cmd := &cobra.Command{
		Use:   "sim --trace DIR|FILE [--setup literature|realistic] [--policy NAME] [--cpu-ratio X] [--memory-ratio X] [-o json|table]",
		Short: "Replay a utilisation trace through vpool's placement and balancing in virtual time",
		Long: `sim replays a utilisation trace (a PlanetLab folder: one file per VM, one
percent per line every 5 minutes; or a CSV file vm,timestamp,cpu_pct[,mem_pct])
through the same code the server runs — VMs start where the server's
scheduler (internal/scheduler) places them, then the balance planners move
them — and reports energy, SLA violations (slatah, pdm, slav as
fractions), migrations and host shutdowns. Every move the balancer plans
passes the scheduler's placement rules (capacity under the cluster's
allocation ratios, labels, affinity), as on the server. The literature's
policies keep the literature's initial placement (PABFD; first fit for
dvfs) and their own model, so that the published figures are reproduced.

The simulated cluster runs the server's default policy (CPU ratio 4,
memory and disk 1.0); --cpu-ratio and --memory-ratio replay other ratios.

--setup literature reproduces CloudSim 3.0.3's PowerDynamicConsolidation
examples (800 HP ML110 G4/G5 hosts, four EC2-like VM types); realistic also
counts memory after start and keeps idle VMs. Policy names: vpool (default),
dvfs, and <detector>-<selection>-<parameter> such as thr-mmt-0.8, lr-mmt-1.2,
mad-mmt-2.5, iqr-mc-1.5. See "vpool sim policies".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), cmd, o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.trace, "trace", "", "PlanetLab folder or CSV file (required)")
	f.StringVar(&o.setup, "setup", "literature", "literature or realistic")
	f.StringVar(&o.policy, "policy", "vpool", "policy name (see 'vpool sim policies')")
	f.StringVarP(&o.output, "output", "o", "table", "json or table")
	f.StringVar(&o.svg, "svg", "", "write charts of active hosts and power over time to this SVG file")
	f.StringVar(&o.order, "order", "", "VM order of a PlanetLab folder: native (directory order, as CloudSim; default for literature) or name")
	f.IntVar(&o.hosts, "hosts", simulate.DefaultHosts, "number of hosts")
	f.Uint64Var(&o.seed, "seed", 1, "seed for randomised policies")
	f.Float64Var(&o.cpuRatio, "cpu-ratio", 0, "CPU allocation ratio of the simulated cluster (0: the server's default, 4); not used by the literature's policies")
	f.Float64Var(&o.memRatio, "memory-ratio", 0, "memory allocation ratio of the simulated cluster (0: the server's default, 1); not used by the literature's policies")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "no progress bar")
	cmd.AddCommand(policiesCmd())
	return cmd
}

func policiesCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "policies",
		Short: "List the policies sim and the balancer understand",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps := balance.Policies()
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), ps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tDESCRIPTION")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\n", p.Name, p.Description)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "json or table")
	return cmd
}

func run(ctx context.Context, cmd *cobra.Command, o *options) error {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.trace == "" {
		return fmt.Errorf("%w: --trace is required", ErrUsage)
	}
	if o.output != "json" && o.output != "table" {
		return fmt.Errorf("%w: -o %q (want json or table)", ErrUsage, o.output)
	}
	setup, err := simulate.ParseSetup(o.setup)
	if err != nil {
		return err
	}
	tr, err := load(o, setup)
	if err != nil {
		return err
	}
	cfg := simulate.Config{Setup: setup, Policy: o.policy, Hosts: o.hosts, Seed: o.seed, Now: time.Now, Series: o.svg != "", CPURatio: o.cpuRatio, MemoryRatio: o.memRatio}
	if !o.quiet {
		bar := newBar(cmd.ErrOrStderr(), o.policy)
		cfg.Progress = bar.update
		defer bar.done()
	}
	res, err := simulate.Run(ctx, tr, cfg)
	if err != nil {
		return err
	}
	if o.svg != "" {
		if err := writeSVG(o.svg, res); err != nil {
			return err
		}
	}
	res.Series = nil // charts only; keep the JSON small
	if o.output == "json" {
		return writeJSON(cmd.OutOrStdout(), res)
	}
	return writeTable(cmd.OutOrStdout(), res)
}

func load(o *options, setup simulate.Setup) (*trace.Trace, error) {
	st, err := os.Stat(o.trace)
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	if !st.IsDir() {
		f, err := os.Open(o.trace)
		if err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
		defer f.Close()
		return trace.ParseCSV(f)
	}
	order := o.order
	if order == "" {
		order = "name"
		if setup == simulate.Literature {
			order = "native"
		}
	}
	ord, err := trace.ParseOrder(order)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return trace.ReadPlanetLabDir(o.trace, ord)
}

func writeSVG(path string, res *simulate.Result) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if err := simulate.WriteSVG(f, fmt.Sprintf("%s (%s)", res.Policy, res.Setup), res); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeTable(w io.Writer, r *simulate.Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"policy", r.Policy},
		{"setup", string(r.Setup)},
		{"placement", r.Placement},
		{"cpu / memory ratio", ratios(r)},
		{"vms / hosts", fmt.Sprintf("%d / %d", r.VMs, r.Hosts)},
		{"energy", fmt.Sprintf("%.2f kWh", r.EnergyKWh)},
		{"migrations", fmt.Sprint(r.Migrations)},
		{"SLATAH", fmt.Sprintf("%.4f %%", r.SLATAH*100)},
		{"PDM", fmt.Sprintf("%.4f %%", r.PDM*100)},
		{"SLAV", fmt.Sprintf("%.6f %%", r.SLAV*100)},
		{"ESV", fmt.Sprintf("%.6g", r.ESV)},
		{"host shutdowns", fmt.Sprint(r.HostShutdowns)},
		{"mean active hosts", fmt.Sprintf("%.1f", r.MeanActiveHosts)},
		{"wall", fmt.Sprintf("%.2f s", r.WallS)},
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	return tw.Flush()
}

// ratios are the ratios the scheduler placed and checked moves under, or
// "-" when the literature's placement ran.
func ratios(r *simulate.Result) string {
	if r.CPURatio == 0 {
		return "-"
	}
	return fmt.Sprintf("%g / %g", r.CPURatio, r.MemoryRatio)
}

// bar is a one-line progress bar redrawn in place.
type bar struct {
	w     io.Writer
	label string
	last  int
}

func newBar(w io.Writer, label string) *bar { return &bar{w: w, label: label, last: -1} }

func (b *bar) update(step, steps int) {
	if steps <= 0 {
		return
	}
	pct := step * 100 / steps
	if pct == b.last {
		return
	}
	b.last = pct
	const width = 30
	n := pct * width / 100
	fmt.Fprintf(b.w, "\r%s [%s%s] %3d%% step %d/%d", b.label, strings.Repeat("#", n), strings.Repeat(" ", width-n), pct, step, steps)
}

func (b *bar) done() {
	if b.last >= 0 {
		fmt.Fprintln(b.w)
	}
}
