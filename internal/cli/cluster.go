package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/model"
)

func (a *app) clusterCmd() *cobra.Command {
	policy := group("policy", "Show or change the placement policy", a.policyShowCmd(), a.policySetCmd())
	return group("cluster", "Show the cluster, its servers, its placement policy and its energy", a.clusterInfoCmd(), policy, a.clusterEnergyCmd(), a.memberCmd())
}

func (a *app) clusterInfoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the cluster summary",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			info, err := c.ClusterInfo(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd, info, func(w io.Writer) {
				field(w, "Address", c.Addr())
				field(w, "Server", info.Server)
				field(w, "Version", info.Version)
				field(w, "Leader", orDash(info.Leader))
				field(w, "Store", info.Store)
				field(w, "CA hash", info.CAHash)
				field(w, "Hosts", info.Hosts)
				field(w, "VMs", info.VMs)
				field(w, "Projects", info.Projects)
			})
		},
	}
}

func policyTable(w io.Writer, p *model.Policy) {
	field(w, "Strategy", orDash(p.Strategy))
	field(w, "CPU ratio", num(p.Ratios.CPU))
	field(w, "Memory ratio", num(p.Ratios.Memory))
	field(w, "Disk ratio", num(p.Ratios.Disk))
	names := make([]string, 0, len(p.Weights))
	for k := range p.Weights {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		field(w, "Weight "+k, num(p.Weights[k]))
	}
	if p.MigrationDowntimeLimitMs > 0 {
		field(w, "Migration downtime limit", fmt.Sprintf("%dms", p.MigrationDowntimeLimitMs))
	}
	if p.MigrationMultifdChannels > 0 {
		field(w, "Migration multifd channels", strconv.Itoa(p.MigrationMultifdChannels))
	}
	field(w, "HA timings", p.HAPolicy().String())
}

// haFlags are the HA policy's flags of cluster policy set (durations,
// whole milliseconds; 0 restores the default).
type haFlags struct {
	heartbeat, suspect, fence, margin, fenceCommand time.Duration
	tolerate                                        int
}

func (h *haFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.DurationVar(&h.heartbeat, "ha-heartbeat", 0, "how often agents renew their liveness (ha.heartbeatMillis; 0: the default 1s)")
	f.DurationVar(&h.suspect, "ha-suspect", 0, "no renewal for this long makes a host suspect (ha.suspectMillis; 0: 4s)")
	f.DurationVar(&h.fence, "ha-fence", 0, "no renewal for this long makes an agent kill its VMs, the host failed (ha.fenceMillis; 0: 6s)")
	f.DurationVar(&h.margin, "ha-margin", 0, "added to --ha-fence before VMs restart elsewhere (ha.marginMillis; 0: 2s)")
	f.DurationVar(&h.fenceCommand, "ha-fence-command", 0, "when the leader runs the servers' --fence-cmd, from the last renewal: --ha-suspect to --ha-fence (ha.fenceCommandMillis; 0: at the fence timeout)")
	f.IntVar(&h.tolerate, "ha-tolerate-host-failures", 0, "keep a failover reserve for this many hosts (ha.tolerateHostFailures)")
}

var haFlagNames = []string{"ha-heartbeat", "ha-suspect", "ha-fence", "ha-margin", "ha-fence-command", "ha-tolerate-host-failures"}

// apply sets the changed flags on p's HA policy; it reports whether any was.
func (h *haFlags) apply(cmd *cobra.Command, p *model.Policy) bool {
	f := cmd.Flags()
	hp := model.HAPolicy{}
	if p.HA != nil {
		hp = *p.HA
	}
	changed := false
	for _, x := range []struct {
		name string
		d    time.Duration
		to   *int
	}{{"ha-heartbeat", h.heartbeat, &hp.HeartbeatMillis}, {"ha-suspect", h.suspect, &hp.SuspectMillis}, {"ha-fence", h.fence, &hp.FenceMillis},
		{"ha-margin", h.margin, &hp.MarginMillis}, {"ha-fence-command", h.fenceCommand, &hp.FenceCommandMillis}} {
		if f.Changed(x.name) {
			*x.to, changed = int(x.d/time.Millisecond), true
		}
	}
	if f.Changed("ha-tolerate-host-failures") {
		hp.TolerateHostFailures, changed = h.tolerate, true
	}
	if changed {
		p.HA = &hp
	}
	return changed
}

func (a *app) policyShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show",
		Aliases: []string{"get"},
		Short:   "Show the placement policy",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			p, err := c.Policy(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd, p, func(w io.Writer) { policyTable(w, p) })
		},
	}
}

func (a *app) policySetCmd() *cobra.Command {
	var cpu, mem, disk float64
	var strategy string
	var weights []string
	var downtime time.Duration
	var channels int
	var hf haFlags
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Change the placement policy (only the flags given change)",
		Example: `  vpool cluster policy set --cpu-ratio 8 --strategy spread
  vpool cluster policy set --weight balance=2 --weight binpack=0
  vpool cluster policy set --migration-downtime-limit 100ms
  vpool cluster policy set --migration-multifd-channels 1   # one memory stream for every VM that sets none
  vpool cluster policy set --ha-fence-command 4s   # fence by --fence-cmd at the suspect timeout`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			ws := map[string]float64{}
			for _, item := range weights {
				k, v, ok := strings.Cut(item, "=")
				x, err := strconv.ParseFloat(v, 64)
				if !ok || k == "" || err != nil {
					return usagef("--weight: %q is not name=number", item)
				}
				ws[k] = x
			}
			haChanged := false
			for _, n := range haFlagNames {
				haChanged = haChanged || f.Changed(n)
			}
			if !f.Changed("cpu-ratio") && !f.Changed("memory-ratio") && !f.Changed("disk-ratio") && !f.Changed("strategy") && len(ws) == 0 &&
				!f.Changed("migration-downtime-limit") && !f.Changed("migration-multifd-channels") && !haChanged {
				return usageErr(fmt.Errorf("cluster policy set: %w (--cpu-ratio, --memory-ratio, --disk-ratio, --strategy, --weight, --migration-downtime-limit, --migration-multifd-channels, --ha-*)", errNothingToChange))
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			p, err := c.Policy(cmd.Context())
			if err != nil {
				return err
			}
			if f.Changed("cpu-ratio") {
				p.Ratios.CPU = cpu
			}
			if f.Changed("memory-ratio") {
				p.Ratios.Memory = mem
			}
			if f.Changed("disk-ratio") {
				p.Ratios.Disk = disk
			}
			if f.Changed("strategy") {
				p.Strategy = strategy
			}
			if f.Changed("migration-downtime-limit") {
				p.MigrationDowntimeLimitMs = int(downtime / time.Millisecond)
			}
			if f.Changed("migration-multifd-channels") {
				p.MigrationMultifdChannels = channels
			}
			hf.apply(cmd, p)
			if len(ws) > 0 && p.Weights == nil {
				p.Weights = map[string]float64{}
			}
			for k, v := range ws {
				p.Weights[k] = v
			}
			p, err = c.SetPolicy(cmd.Context(), *p)
			if err != nil {
				return err
			}
			return a.print(cmd, p, func(w io.Writer) { policyTable(w, p) })
		},
	}
	f := cmd.Flags()
	f.Float64Var(&cpu, "cpu-ratio", 0, "vCPUs allocatable per physical CPU")
	f.Float64Var(&mem, "memory-ratio", 0, "memory allocatable per byte of RAM")
	f.Float64Var(&disk, "disk-ratio", 0, "disk allocatable per byte of storage")
	f.StringVar(&strategy, "strategy", "", "binpack or spread")
	f.StringArrayVar(&weights, "weight", nil, "score plugin weight name=value (repeatable)")
	f.DurationVar(&downtime, "migration-downtime-limit", 0, "cap on a live migration's pause for VMs without their own, e.g. 100ms (0: the default 300ms)")
	f.IntVar(&channels, "migration-multifd-channels", 0, "memory-stream connections of a live migration for VMs without their own and without post-copy: 1 one stream, up to 16 (0: the source host chooses from the guest's dirty rate)")
	hf.add(cmd)
	return cmd
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the client's version and, when reachable, the server's",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.format(); err != nil {
				return err
			}
			v := struct {
				Client string `json:"client"`
				Server string `json:"server,omitempty"`
				Error  string `json:"serverError,omitempty"`
			}{Client: a.version}
			c, err := a.client()
			if err == nil {
				ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
				defer cancel()
				ci, err2 := c.ClusterInfo(ctx)
				if err2 == nil {
					v.Server = ci.Version
				} else {
					err = err2
				}
			}
			if err != nil {
				v.Error = describe(err)
			}
			return a.print(cmd, v, func(w io.Writer) {
				fmt.Fprintf(w, "client: %s\n", v.Client)
				if v.Server != "" {
					fmt.Fprintf(w, "server: %s (%s)\n", v.Server, c.Addr())
				} else {
					fmt.Fprintf(w, "server: unreachable: %s\n", v.Error)
				}
			})
		},
	}
}
