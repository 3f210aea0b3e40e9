package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

func restoreLine(r *model.Restore) string {
	s := fmt.Sprintf("restore %s: backup %s into %s %s", r.Name, r.Backup, r.VM, r.Phase)
	if r.BytesRestored > 0 {
		s += fmt.Sprintf(" (%s in %dms", model.Bytes(r.BytesRestored), r.RestoreMs)
		if r.BootMs > 0 {
			s += fmt.Sprintf(", booted in %dms", r.BootMs)
		}
		s += ")"
	}
	if r.Error != "" {
		s += ": " + r.Error
	}
	return s
}

func (a *app) waitRestore(cmd *cobra.Command, c *client.Client, project string, r *model.Restore, timeout time.Duration) (*model.Restore, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	pb := newProgressBar(errw(cmd), a.env.now)
	out, err := c.WaitRestore(ctx, project, r.Name, func(x *model.Restore) { showProgress(pb, "restore "+string(x.Phase), x.Progress) })
	pb.done()
	return out, err
}

func (a *app) backupRestoreCmd() *cobra.Command {
	var req api.RestoreRequest
	var noWait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "restore ID (--as NEWNAME | --force) [--boot-check]",
		Short: "Restore a backup as a new VM, or over the stopped VM it was taken of",
		Example: `  vpool backup restore b-20261206t101500-1a2b3c --as web1-copy --boot-check
  vpool vm stop web1 && vpool backup restore b-20261206t101500-1a2b3c --force --start
  vpool backup restore b-20261206t101500-1a2b3c --from-repo offsite --as web1`,
		Args: exactArgs(1, "a backup id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			r, err := c.RestoreBackup(cmd.Context(), a.cfg.Project, args[0], req)
			if err != nil {
				return err
			}
			if !noWait {
				if r, err = a.waitRestore(cmd, c, a.cfg.Project, r, timeout); err != nil {
					return err
				}
			}
			if perr := a.print(cmd, r, func(w io.Writer) { fmt.Fprintln(w, restoreLine(r)) }); perr != nil {
				return perr
			}
			if r.Phase == model.RestoreFailed {
				return fmt.Errorf("restore %s failed: %s", r.Name, r.Error)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.As, "as", "", "name of the new VM")
	f.BoolVar(&req.Force, "force", false, "overwrite the (stopped) VM the backup was taken of")
	f.BoolVar(&req.BootCheck, "boot-check", false, "start the VM and wait until it is up: its guest agent answers or its ready marker shows")
	f.StringVar(&req.BootCheckBy, "boot-check-by", "", "auto (default: guest agent or ready marker, whichever first), agent or marker")
	f.BoolVar(&req.Start, "start", false, "start the VM after the restore")
	f.StringVar(&req.ReadyMarker, "ready-marker", "", "console line of a booted guest (default "+model.DefaultReadyMarker+")")
	f.StringVar(&req.Repo, "from-repo", "", "restore from this repository's catalog (a synced or another cluster's repository)")
	f.BoolVar(&noWait, "no-wait", false, "return once the restore is asked for")
	f.DurationVar(&timeout, "timeout", time.Hour, "how long to wait")
	return cmd
}

// backupTaskCmd is verify, gc or sync: a repository task the leader runs.
func (a *app) backupTaskCmd(kind, short, example string) *cobra.Command {
	var req api.BackupTaskRequest
	var noWait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use: kind + " --repo R [ID...]", Short: short, Example: "  " + example,
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Kind, req.Backups = kind, args
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			t, err := c.CreateBackupTask(cmd.Context(), req)
			if err != nil {
				return err
			}
			if !noWait {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				pb := newProgressBar(errw(cmd), a.env.now)
				t, err = c.WaitBackupTask(ctx, t.Name, func(x *model.BackupTask) {
					pb.show(kind+" "+string(x.Phase), fmt.Sprintf("%s %s: %d of %d chunks", kind, x.Phase, x.Progress.Done, x.Progress.Total))
				})
				pb.done()
				if err != nil {
					return err
				}
			}
			if perr := a.print(cmd, t, func(w io.Writer) { taskFields(w, t) }); perr != nil {
				return perr
			}
			if t.Phase == model.BackupFailed {
				return fmt.Errorf("%s of %s failed: %s", kind, t.Repo, t.Error)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Repo, "repo", "", "the repository")
	if kind == "sync" {
		f.StringVar(&req.Target, "to", "", "the repository to copy into (same key)")
	}
	f.BoolVar(&noWait, "no-wait", false, "return once the task is asked for")
	f.DurationVar(&timeout, "timeout", 6*time.Hour, "how long to wait")
	return cmd
}

func taskFields(w io.Writer, t *model.BackupTask) {
	field(w, "Task", t.Name)
	field(w, "Kind", t.Kind)
	field(w, "Repository", t.Repo)
	if t.Target != "" {
		field(w, "Target", t.Target)
	}
	field(w, "Phase", t.Phase)
	keys := make([]string, 0, len(t.Result))
	for k := range t.Result {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k != "problems" {
			field(w, k, fmt.Sprint(t.Result[k]))
		}
	}
	for _, p := range t.Problems {
		field(w, "Problem", p)
	}
	if t.Error != "" {
		field(w, "Error", t.Error)
	}
}

func (a *app) failoverCmd() *cobra.Command {
	var req api.FailoverRequest
	var noWait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:     "failover --project P --from REPO [--boot-check]",
		Short:   "Restore a project's latest backups from a repository as VMs of this cluster",
		Example: "  vpool dr failover --project shop --from site-a --boot-check",
		Args:    exactArgs(0, "flags only"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			res, err := c.Failover(cmd.Context(), req)
			if err != nil {
				return err
			}
			failed := 0
			if !noWait {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				for i := range res.Restores {
					r, err := c.WaitRestore(ctx, req.Project, res.Restores[i].Name, nil)
					if err != nil {
						return err
					}
					res.Restores[i] = *r
					if r.Phase != model.RestoreCompleted {
						failed++
					}
				}
			}
			took := time.Since(start)
			if perr := a.print(cmd, res, func(w io.Writer) {
				for i := range res.Restores {
					fmt.Fprintln(w, restoreLine(&res.Restores[i]))
				}
				for vm, why := range res.Skipped {
					fmt.Fprintf(w, "skipped %s: %s\n", vm, why)
				}
				if !noWait {
					fmt.Fprintf(w, "failover %s: %d VMs of %s in %.1fs\n", res.ID, len(res.Restores)-failed, req.Project, took.Seconds())
				}
			}); perr != nil {
				return perr
			}
			if failed > 0 || len(res.Skipped) > 0 {
				return fmt.Errorf("failover %s: %d restores failed, %d VMs skipped", res.ID, failed, len(res.Skipped))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Project, "project", "", "the project to fail over")
	f.StringVar(&req.Repo, "from", "", "the repository holding its backups (registered here)")
	f.BoolVar(&req.BootCheck, "boot-check", false, "wait until every VM is up (its guest agent answers or its ready marker shows)")
	f.StringVar(&req.BootCheckBy, "boot-check-by", "", "auto (default), agent or marker")
	f.StringVar(&req.ReadyMarker, "ready-marker", "", "console line of a booted guest (default "+model.DefaultReadyMarker+")")
	f.BoolVar(&noWait, "no-wait", false, "return once the restores are asked for")
	f.DurationVar(&timeout, "timeout", time.Hour, "how long to wait")
	return cmd
}
