package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

// addMigrationCommands adds `vm migrate`, `host drain`, `host undrain` and
// the `migration` noun to root.
func (a *app) addMigrationCommands(root *cobra.Command) {
	for _, c := range root.Commands() {
		switch c.Name() {
		case "vm":
			c.AddCommand(a.vmMigrateCmd())
		case "host":
			c.AddCommand(a.hostDrainCmd(), a.hostUndrainCmd())
		}
	}
	root.AddCommand(group("migration", "List, show and cancel VM migrations",
		a.migrationListCmd(), a.migrationShowCmd(), a.migrationCancelCmd()))
}

func (a *app) vmMigrateCmd() *cobra.Command {
	var to string
	var wait waitOpts
	var postCopy, dryRun bool
	var downtime, timeout time.Duration
	var bandwidth string
	cmd := &cobra.Command{
		Use:   "migrate NAME",
		Short: "Move a VM to another host: live when it runs, cold when it is stopped",
		Long: `Move a VM to another host. A running VM moves live (memory streams from
host to host while it runs; the pause at switch-over is bounded by the
downtime limit, default 300ms or the VM's spec.migration); a stopped VM
moves cold. Without --to the scheduler picks the target among the other
hosts with the usual placement rules. A VM pinned to its host (created
with --host) moves only with --to, and its pin then moves to that host.
Pre-checks refuse, before anything
is touched, a target without room, outside the VM's placement rules, not
ready, missing the VM's networks or running an incompatible hypervisor.
It waits until the migration ends (unless --no-wait), with a progress bar
on stderr: the phase, bytes sent and left, the dirty rate, the expected
downtime and the ETA.`,
		Args: exactArgs(1, "one VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			req := api.MigrationRequest{VM: args[0], To: to, DryRun: dryRun}
			if cmd.Flags().Changed("downtime-limit") {
				ms := int(downtime / time.Millisecond)
				req.DowntimeLimitMs = &ms
			}
			if cmd.Flags().Changed("post-copy") {
				req.AllowPostCopy = &postCopy
			}
			if bandwidth != "" {
				bw, err := model.ParseBytes(bandwidth)
				if err != nil || bw <= 0 {
					return fmt.Errorf("--bandwidth %q: want a rate per second such as 64MiB", bandwidth)
				}
				req.BandwidthBps = int64(bw)
			}
			m, err := c.MigrateVM(cmd.Context(), a.cfg.Project, req)
			if err != nil {
				return err
			}
			if dryRun {
				return a.print(cmd, m, func(w io.Writer) {
					fmt.Fprintf(w, "vm %s would move %s from %s to %s\n", m.VM, m.Mode, m.Source, m.Target)
				})
			}
			if !wait.enabled() {
				return a.print(cmd, m, func(w io.Writer) {
					fmt.Fprintf(w, "migration %s: vm %s moving %s from %s to %s\n", m.Name, m.VM, m.Mode, m.Source, m.Target)
				})
			}
			return a.waitMigration(cmd, c, m.Name, timeout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "target host (default: the scheduler picks)")
	wait.flags(cmd, "the migration ends (a progress bar on stderr meanwhile)")
	f.DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait")
	f.DurationVar(&downtime, "downtime-limit", 0, "cap on the pause at switch-over, e.g. 100ms (default: the VM's, the cluster policy's, or 300ms)")
	f.BoolVar(&postCopy, "post-copy", false, "allow post-copy when pre-copy does not converge")
	f.StringVar(&bandwidth, "bandwidth", "", "starting stream rate per second, e.g. 64MiB (default: the driver's, 1GiB for QEMU; escalation may raise it)")
	f.BoolVar(&dryRun, "dry-run", false, "run the pre-checks and show the plan; change nothing")
	return cmd
}

// waitMigration follows a migration to its end, drawing progress on
// stderr, and fails unless it completed.
func (a *app) waitMigration(cmd *cobra.Command, c *client.Client, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	bar := newProgressBar(errw(cmd), a.env.now)
	m, err := c.WaitMigration(ctx, id, func(m *model.Migration) {
		bar.show(string(m.Phase)+"/"+m.Progress.Stage, migrationProgressLine(m))
	})
	bar.done()
	if err != nil {
		return fmt.Errorf("waiting for migration %s: %w", id, err)
	}
	if perr := a.print(cmd, m, func(w io.Writer) { fmt.Fprintln(w, migrationSummary(m)) }); perr != nil {
		return perr
	}
	if m.Phase != model.MigrationCompleted {
		return fmt.Errorf("migration %s %s: %s", m.Name, m.Phase, orDash(m.Reason))
	}
	return nil
}

// migrationSummary is one line saying how a migration ended.
func migrationSummary(m *model.Migration) string {
	s := fmt.Sprintf("migration %s: vm %s %s on %s", m.Name, m.VM, m.Phase, m.Source)
	if m.Phase == model.MigrationCompleted {
		s = fmt.Sprintf("migration %s: vm %s moved %s from %s to %s", m.Name, m.VM, m.Mode, m.Source, m.Target)
		if r := m.Result; r != nil && m.Mode == model.MigrationLive {
			s += fmt.Sprintf(" (total %dms, downtime %dms, %s sent)", r.TotalMs, r.DowntimeMs, model.Bytes(r.BytesSent))
		}
	} else if m.Reason != "" {
		s += ": " + m.Reason
	}
	return s
}

// migrationProgressLine renders phase (and the driver's stage), a bar,
// bytes sent and left, dirty rate, expected downtime and ETA; while local
// disks are copied, the disk copy instead; at the switch-over, that.
//
// Memory is done when nothing is left, not when as much as its size was
// sent: pre-copy sends pages again as the guest dirties them, so the bar
// is (total - left) / total, and it shows 100 % only once the switch-over
// began.
func migrationProgressLine(m *model.Migration) string {
	pr := m.Progress
	disks := pr.Stage == "disks" && pr.DiskTotal > 0
	switching := pr.Stage == "switchover" || m.Phase == model.MigrationSwitchingOver || m.Phase == model.MigrationCompleted
	frac := 0.0
	switch {
	case switching:
		frac = 1
	case disks:
		frac = float64(pr.DiskSent) / float64(pr.DiskTotal)
	case pr.BytesTotal > 0:
		frac = 1 - float64(pr.BytesLeft)/float64(pr.BytesTotal)
	}
	if !switching {
		frac = min(frac, 0.99)
	}
	frac = min(max(frac, 0), 1)
	const width = 24
	n := int(frac * width)
	bar := "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
	phase := string(m.Phase)
	if pr.Stage != "" && m.Phase == model.MigrationTransferring {
		phase += "/" + pr.Stage
	}
	switch {
	case m.Phase == model.MigrationCompleted:
		return fmt.Sprintf("%-26s %s %3.0f%%  done", phase, bar, frac*100)
	case switching && pr.BytesSent > 0:
		return fmt.Sprintf("%-26s %s %3.0f%%  switching over, %s sent", phase, bar, frac*100, model.Bytes(pr.BytesSent))
	case switching:
		return fmt.Sprintf("%-26s %s %3.0f%%  switching over", phase, bar, frac*100)
	case disks:
		return fmt.Sprintf("%-26s %s %3.0f%%  disks %s of %s  eta %s", phase, bar, frac*100,
			model.Bytes(pr.DiskSent), model.Bytes(pr.DiskTotal), eta(pr.ETASeconds))
	}
	line := fmt.Sprintf("%-26s %s %3.0f%%  sent %s  left %s  dirty %s/s  downtime ~%dms  eta %s",
		phase, bar, frac*100, model.Bytes(pr.BytesSent), model.Bytes(pr.BytesLeft), model.Bytes(pr.DirtyRate),
		pr.ExpectedDowntimeMs, eta(pr.ETASeconds))
	if pr.ThrottlePct > 1 {
		line += fmt.Sprintf("  throttle %d%%", pr.ThrottlePct)
	}
	return line
}

// eta renders the agent's estimate: "-" when it has none (the guest
// dirties memory about as fast as it moves, so the driver's escalation,
// not the rate, decides when it ends).
func eta(s float64) string {
	if s <= 0 {
		return "-"
	}
	return (time.Duration(s*float64(time.Second)) / time.Second * time.Second).String()
}

func (a *app) migrationListCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List migrations, newest first",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			ms, err := c.ListMigrations(cmd.Context(), a.cfg.Project, all)
			if err != nil {
				return err
			}
			if ms == nil {
				ms = []model.Migration{}
			}
			if len(ms) == 0 && !all {
				a.emptyHint(cmd, "migrations")
			}
			return a.print(cmd, ms, func(w io.Writer) { a.migrationTable(w, ms) })
		},
	}
	cmd.Flags().BoolVarP(&all, "all-projects", "A", false, "every project's migrations (admin)")
	return cmd
}

func (a *app) migrationTable(w io.Writer, ms []model.Migration) {
	now := a.env.now()
	row(w, "ID", "VM", "MODE", "FROM", "TO", "PHASE", "PROGRESS", "DOWNTIME", "AGE")
	for i := range ms {
		m := &ms[i]
		prog, down := "-", "-"
		if t := m.Progress.BytesTotal; t > 0 && !m.Phase.Final() {
			prog = fmt.Sprintf("%.0f%%", min(99, 100*(1-float64(m.Progress.BytesLeft)/float64(t))))
		}
		if m.Phase == model.MigrationCompleted || m.Phase == model.MigrationSwitchingOver {
			prog = "100%"
		}
		if m.Result != nil && m.Mode == model.MigrationLive {
			down = fmt.Sprintf("%dms", m.Result.DowntimeMs)
		}
		row(w, m.Name, m.Project+"/"+m.VM, m.Mode, m.Source, m.Target, m.Phase, prog, down, age(now, m.CreatedAt))
	}
}

func (a *app) migrationShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show ID|VM",
		Aliases: []string{"get", "describe"},
		Short:   "Show a migration with its progress and result (by id, or a VM's latest)",
		Args:    exactArgs(1, "one migration id or VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			m, err := c.GetMigration(cmd.Context(), args[0])
			if client.IsNotFound(err) {
				m, err = a.latestMigration(cmd, c, args[0], err)
			}
			if err != nil {
				return err
			}
			return a.print(cmd, m, func(w io.Writer) { a.describeMigration(w, m) })
		},
	}
}

// latestMigration returns the newest migration of the VM named vm in the
// project in use, or notFound when there is none.
func (a *app) latestMigration(cmd *cobra.Command, c *client.Client, vm string, notFound error) (*model.Migration, error) {
	ms, err := c.ListMigrations(cmd.Context(), a.cfg.Project, false)
	if err != nil {
		return nil, err
	}
	var best *model.Migration
	for i := range ms {
		if ms[i].VM == vm && (best == nil || ms[i].CreatedAt.After(best.CreatedAt)) {
			best = &ms[i]
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w (nor is it a VM with migrations in this project)", notFound)
	}
	return best, nil
}

func (a *app) describeMigration(w io.Writer, m *model.Migration) {
	now := a.env.now()
	field(w, "ID", m.Name)
	field(w, "VM", m.Project+"/"+m.VM)
	field(w, "Mode", m.Mode)
	field(w, "From", m.Source)
	field(w, "To", m.Target)
	field(w, "Phase", m.Phase)
	field(w, "Reason", m.Reason)
	field(w, "Drain of", m.Drain)
	field(w, "Downtime limit", fmt.Sprintf("%dms", m.Options.DowntimeLimitMs))
	if m.Options.AllowPostCopy {
		field(w, "Post-copy", "allowed")
	}
	if m.Options.MultifdChannels > 0 {
		field(w, "Multifd channels", fmt.Sprint(m.Options.MultifdChannels))
	}
	if m.Progress.BytesTotal > 0 || m.Progress.DiskTotal > 0 {
		field(w, "Progress", migrationProgressLine(m))
		if m.Progress.Note != "" && !m.Phase.Final() {
			field(w, "Stage", m.Progress.Stage+": "+m.Progress.Note)
		}
	}
	if r := m.Result; r != nil {
		field(w, "Total", fmt.Sprintf("%dms (wall %dms)", r.TotalMs, r.WallMs))
		if m.Mode == model.MigrationLive {
			field(w, "Downtime", fmt.Sprintf("%dms", r.DowntimeMs))
		}
		sent := model.Bytes(r.BytesSent).String()
		if r.RAMBytes > 0 || r.DiskBytes > 0 {
			sent += fmt.Sprintf(" (memory %s, disks %s)", model.Bytes(r.RAMBytes), model.Bytes(r.DiskBytes))
		}
		field(w, "Bytes sent", sent)
		if len(r.SharedDisks) > 0 {
			field(w, "Shared disks", strings.Join(r.SharedDisks, ", "))
		}
		if m.Mode == model.MigrationLive {
			gap := "not measured (the guest prints no ticks on its console; the test guest does with vpool.tick=1)"
			if r.GuestGapMs > 0 {
				gap = fmt.Sprintf("%dms (the longest pause the guest's own clock saw)", r.GuestGapMs)
			}
			field(w, "Guest gap", gap)
		}
		if r.Stage != "" {
			field(w, "Last stage", r.Stage)
		}
		if len(r.Notes) == 0 && m.Mode == model.MigrationLive {
			field(w, "Escalations", "none: pre-copy converged with the starting parameters")
		}
		for _, n := range r.Notes {
			field(w, "Escalation", n)
		}
		if r.PostCopy {
			field(w, "Post-copy", "switched")
		}
		field(w, "Encrypted", yesNo(r.TLS))
	}
	field(w, "Created", stamp(now, m.CreatedAt))
	if m.FinishedAt != nil {
		field(w, "Finished", stamp(now, *m.FinishedAt))
	}
	if m.Phase.Final() {
		cleaned := "yes"
		if (m.Phase == model.MigrationCompleted && !m.SourceCleaned) || (m.Phase != model.MigrationCompleted && !m.TargetCleaned) {
			cleaned = "pending"
		}
		field(w, "Leftovers cleaned", cleaned)
	}
}

func (a *app) migrationCancelCmd() *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a migration; a transfer under way is aborted and the VM stays where it was",
		Args:  exactArgs(1, "one migration id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			m, err := c.CancelMigration(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if wait {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				if m, err = c.WaitMigration(ctx, m.Name, nil); err != nil {
					return err
				}
			}
			return a.print(cmd, m, func(w io.Writer) {
				if wait {
					fmt.Fprintln(w, migrationSummary(m))
					return
				}
				fmt.Fprintf(w, "migration %s: cancel requested\n", m.Name)
			})
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the migration ends")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long --wait waits")
	return cmd
}

func (a *app) hostDrainCmd() *cobra.Command {
	var maxConc int
	var wait waitOpts
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "drain HOST",
		Short: "Put a host in maintenance and move every VM away",
		Long: `Put a host in maintenance and move every VM away: running VMs live,
stopped VMs cold, each to the host the scheduler picks with the VM's
placement rules, at most --max-concurrent at a time. VMs that cannot
move are listed with the reason; the drain keeps trying them as
capacity frees up. 'vpool host undrain HOST' ends it.`,
		Args: exactArgs(1, "one host name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			res, err := c.DrainHost(cmd.Context(), args[0], maxConc)
			if err != nil {
				return err
			}
			if err := a.print(cmd, res, func(w io.Writer) { drainTable(w, res) }); err != nil {
				return err
			}
			if !wait.enabled() {
				return nil
			}
			return a.waitDrain(cmd, c, args[0], timeout)
		},
	}
	cmd.Flags().IntVar(&maxConc, "max-concurrent", model.DefaultDrainConcurrency, "migrations at once from this host")
	wait.flags(cmd, "no VM is left on the host (or only VMs that cannot move)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait")
	return cmd
}

func drainTable(w io.Writer, res *api.DrainResponse) {
	fmt.Fprintf(w, "host %s: maintenance, draining (at most %d migrations at once)\n", res.Host.Name, maxConcurrent(&res.Host))
	if len(res.Movable) > 0 {
		row(w, "VM", "MODE", "TARGET")
		for _, it := range res.Movable {
			row(w, it.VM, it.Mode, it.Target)
		}
	}
	if len(res.Blocked) > 0 {
		fmt.Fprintf(w, "%d VMs cannot move:\n", len(res.Blocked))
		for _, it := range res.Blocked {
			row(w, "  "+it.VM, it.Reason)
		}
	}
}

func maxConcurrent(h *model.Host) int {
	if h.Drain != nil && h.Drain.MaxConcurrent > 0 {
		return h.Drain.MaxConcurrent
	}
	return model.DefaultDrainConcurrency
}

// waitDrain polls the host until the drain is done or nothing but
// blocked VMs remains with no migration under way.
func (a *app) waitDrain(cmd *cobra.Command, c *client.Client, host string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	bar := newProgressBar(errw(cmd), a.env.now)
	defer bar.done()
	for {
		h, err := c.GetHost(ctx, host)
		if err != nil {
			return err
		}
		if h.Drain == nil {
			return fmt.Errorf("host %s: the drain was ended", host)
		}
		if h.Drain.Done {
			bar.done()
			fmt.Fprintf(errw(cmd), "host %s drained\n", host)
			return nil
		}
		ms, err := c.ListMigrations(ctx, "", true)
		if err != nil {
			return err
		}
		active := 0
		for _, m := range ms {
			if m.Drain == host && !m.Phase.Final() {
				active++
			}
		}
		if active == 0 && h.VMs > 0 && len(h.Drain.Blocked) >= h.VMs {
			return fmt.Errorf("host %s: %d VMs cannot move", host, len(h.Drain.Blocked))
		}
		bar.show(fmt.Sprintf("%d/%d/%d", h.VMs, active, len(h.Drain.Blocked)),
			fmt.Sprintf("host %s: %d VMs left, %d migrating, %d blocked", host, h.VMs, active, len(h.Drain.Blocked)))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (a *app) hostUndrainCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "undrain HOST",
		Short: "End a host's maintenance and its drain",
		Args:  exactArgs(1, "one host name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			h, err := c.UndrainHost(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, h, func(w io.Writer) { fmt.Fprintf(w, "host %s: %s\n", h.Name, hostState(h)) })
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
