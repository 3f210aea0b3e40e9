package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) balanceCmd() *cobra.Command {
	return group("balance", "Show or change load balancing and power saving, and see the balancer's plan",
		a.balanceShowCmd(), a.balanceSetCmd(), a.balancePlanCmd())
}

func balanceTable(w io.Writer, s *model.BalanceSettings) {
	field(w, "Mode", s.Mode)
	field(w, "Policy", s.Policy)
	field(w, "Interval", s.Interval())
	field(w, "Max moves/round", capOrNone(s.MaxMovesPerRound))
	field(w, "Max moves/host", capOrNone(s.MaxMovesPerHost))
	field(w, "Standby", s.Power.Standby)
	field(w, "Min hosts on", s.Power.MinHostsOn)
	field(w, "Headroom", num(s.Power.HeadroomPercent)+"%")
	field(w, "Idle before standby", time.Duration(s.Power.IdleSeconds)*time.Second)
	field(w, "Grid intensity", num(s.Energy.GridIntensity)+" gCO2e/kWh")
	field(w, "PUE", num(s.Energy.PUE))
}

func capOrNone(n int) string {
	if n <= 0 {
		return "no cap"
	}
	return fmt.Sprint(n)
}

func (a *app) balanceShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show",
		Aliases: []string{"get"},
		Short:   "Show the balancing, power and energy settings",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			s, err := c.BalanceSettings(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd, s, func(w io.Writer) { balanceTable(w, s) })
		},
	}
}

func (a *app) balanceSetCmd() *cobra.Command {
	var mode, policy string
	var interval, idle time.Duration
	var perRound, perHost, minOn int
	var headroom, grid, pue float64
	var standby bool
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Change balancing, power and energy settings (only the flags given change)",
		Example: `  vpool balance set --mode recommend --policy vpool --interval 5m
  vpool balance set --mode automatic --max-moves 4 --max-moves-per-host 1
  vpool balance set --standby --min-hosts-on 2 --headroom 25 --idle 10m
  vpool balance set --grid-intensity 56 --pue 1.2`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			var p api.BalanceSettingsPatch
			n := 0
			if f.Changed("mode") {
				m := model.BalanceMode(mode)
				p.Mode, n = &m, n+1
			}
			if f.Changed("policy") {
				p.Policy, n = &policy, n+1
			}
			if f.Changed("interval") {
				s := int(interval / time.Second)
				p.IntervalSeconds, n = &s, n+1
			}
			if f.Changed("idle") {
				s := int(idle / time.Second)
				p.IdleSeconds, n = &s, n+1
			}
			for name, dst := range map[string]**int{"max-moves": &p.MaxMovesPerRound, "max-moves-per-host": &p.MaxMovesPerHost, "min-hosts-on": &p.MinHostsOn} {
				if f.Changed(name) {
					v, _ := f.GetInt(name)
					*dst, n = &v, n+1
				}
			}
			for name, dst := range map[string]**float64{"headroom": &p.HeadroomPercent, "grid-intensity": &p.GridIntensity, "pue": &p.PUE} {
				if f.Changed(name) {
					v, _ := f.GetFloat64(name)
					*dst, n = &v, n+1
				}
			}
			if f.Changed("standby") {
				p.Standby, n = &standby, n+1
			}
			if n == 0 {
				return usageErr(fmt.Errorf("balance set: %w (see --help)", errNothingToChange))
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			s, err := c.PatchBalanceSettings(cmd.Context(), p)
			if err != nil {
				return err
			}
			return a.print(cmd, s, func(w io.Writer) { balanceTable(w, s) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "mode", "", "off, recommend (plan only) or automatic (migrate)")
	f.StringVar(&policy, "policy", "", "balance policy (vpool sim policies), e.g. vpool, drs, lr-mmt-1.2")
	f.DurationVar(&interval, "interval", 0, "time between balancing rounds, e.g. 5m")
	f.IntVar(&perRound, "max-moves", 0, "at most this many migrations per round (0: no cap)")
	f.IntVar(&perHost, "max-moves-per-host", 0, "at most this many migrations per host and round (0: no cap)")
	f.BoolVar(&standby, "standby", false, "put empty hosts to standby (--standby=false to stop)")
	f.IntVar(&minOn, "min-hosts-on", 0, "hosts always kept on")
	f.Float64Var(&headroom, "headroom", 0, "CPU headroom in percent kept on the hosts that are on")
	f.DurationVar(&idle, "idle", 0, "how long a host stays empty before standby")
	f.Float64Var(&grid, "grid-intensity", 0, "grid carbon intensity in gCO2e/kWh")
	f.Float64Var(&pue, "pue", 0, "power usage effectiveness (>= 1)")
	return cmd
}

func (a *app) balancePlanCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "plan",
		Short: "Show the balancer's last plan: hosts, moves and why",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			p, err := c.BalancePlan(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd, p, func(w io.Writer) { planTable(w, p) })
		},
	}
}

func planTable(w io.Writer, p *model.BalancePlan) {
	fmt.Fprintf(w, "Plan of %s (policy %s, mode %s, %d usage samples): %s\n", p.Time.UTC().Format(time.RFC3339), p.Policy, p.Mode, p.Samples, p.Note)
	if p.Mode == model.BalanceAutomatic {
		fmt.Fprintf(w, "Applied:\t%d of %d moves\n", p.Applied, len(p.Moves))
	}
	if p.Error != "" {
		fmt.Fprintf(w, "Error:\t%s\n", p.Error)
	}
	fmt.Fprintln(w)
	row(w, "HOST", "STATE", "CPU NOW", "CPU AFTER", "VMS AFTER", "POWER MODEL", "WATTS")
	for _, h := range p.Hosts {
		row(w, h.Name, h.State, num(h.CPUPercent)+"%", num(h.PlanPercent)+"%", h.VMs, h.PowerModel, num(h.Watts))
	}
	fmt.Fprintln(w)
	if len(p.Moves) == 0 {
		fmt.Fprintln(w, "No moves.")
		return
	}
	row(w, "VM", "FROM", "TO", "REASON", "CPU")
	for _, m := range p.Moves {
		row(w, m.VM, m.From, m.To, m.Reason, num(m.CPUPercent)+"%")
	}
	fmt.Fprintln(w, "\nWhy:")
	for i, m := range p.Moves {
		fmt.Fprintf(w, "%d. %s\n", i+1, m.Detail)
	}
}

func (a *app) clusterEnergyCmd() *cobra.Command {
	var vms bool
	cmd := &cobra.Command{
		Use:   "energy",
		Short: "Show energy (kWh) and CO2 per host and per project",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			r, err := c.Energy(cmd.Context(), vms)
			if err != nil {
				return err
			}
			return a.print(cmd, r, func(w io.Writer) { energyTable(w, r) })
		},
	}
	cmd.Flags().BoolVar(&vms, "vms", false, "also list every VM")
	return cmd
}

func kwh(f float64) string { return fmt.Sprintf("%.3f", f) }
func co2(g float64) string {
	if g >= 1000 {
		return fmt.Sprintf("%.2f kg", g/1000)
	}
	return fmt.Sprintf("%.0f g", g)
}

func energyTable(w io.Writer, r *api.EnergyReport) {
	if r.Since.IsZero() {
		fmt.Fprintln(w, "No energy booked yet (the leader writes its ledger every minute).")
	} else {
		fmt.Fprintf(w, "Energy since %s (as of %s), grid %s gCO2e/kWh, PUE %s\n", r.Since.UTC().Format(time.RFC3339),
			r.At.UTC().Format(time.RFC3339), num(r.GridIntensity), num(r.PUE))
	}
	fmt.Fprintf(w, "Total:\t%s kWh IT, %s kWh facility, %s CO2e; drawing %s W now; %s kWh unattributed (idle hosts)\n\n",
		kwh(r.TotalKWh), kwh(r.FacilityKWh), co2(r.CO2g), num(r.Watts), kwh(r.UnattributedKWh))
	row(w, "HOST", "STATE", "MODEL", "WATTS", "KWH", "CO2E")
	for _, h := range r.Hosts {
		row(w, h.Name, orDash(string(h.State)), orDash(h.PowerModel), num(h.Watts), kwh(h.KWh), co2(h.CO2g))
	}
	fmt.Fprintln(w)
	row(w, "PROJECT", "KWH", "CO2E")
	for _, p := range r.Projects {
		row(w, p.Name, kwh(p.KWh), co2(p.CO2g))
	}
	if len(r.VMs) > 0 {
		fmt.Fprintln(w)
		row(w, "VM", "KWH", "CO2E")
		for _, v := range r.VMs {
			row(w, v.Name, kwh(v.KWh), co2(v.CO2g))
		}
	}
}
