package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// backupKeyEnv holds a repository key's text when no --key-file is given.
const backupKeyEnv = "VPOOL_BACKUP_KEY"

// The object store's credentials, when no --s3-credentials-file is given.
const (
	s3AccessEnv = "VPOOL_S3_ACCESS_KEY"
	s3SecretEnv = "VPOOL_S3_SECRET_KEY"
)

// readS3Credentials reads an object store's access and secret keys from
// a file (two lines: access key, secret key) or the environment; never
// from the command line.
func (a *app) readS3Credentials(file string) (access, secret string, err error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", "", err
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			return "", "", usagef("%s must hold two words: the access key, then the secret key", file)
		}
		return f[0], f[1], nil
	}
	access, _ = a.env.lookup(s3AccessEnv)
	secret, _ = a.env.lookup(s3SecretEnv)
	if access == "" || secret == "" {
		return "", "", usagef("an s3:// repository needs its credentials: --s3-credentials-file FILE or %s and %s", s3AccessEnv, s3SecretEnv)
	}
	return access, secret, nil
}

func (a *app) backupCmd() *cobra.Command {
	repo := group("repo", "Register, list and show backup repositories",
		a.backupRepoCreateCmd(), a.backupRepoListCmd(), a.backupRepoShowCmd())
	policy := group("policy", "Show and set backup schedules and retention", a.backupPolicyShowCmd(), a.backupPolicySetCmd())
	return group("backup", "Back up, verify, restore and replicate VMs (docs/backup.md)",
		repo, policy, a.backupCreateCmd(), a.backupListCmd(), a.backupShowCmd(), a.backupDeleteCmd(), a.backupRestoreCmd(),
		a.backupTaskCmd("verify", "Read every chunk of a repository's backups and check it", "vpool backup verify --repo main [ID...]"),
		a.backupTaskCmd("gc", "Remove the chunks no backup uses (waits for backups in flight)", "vpool backup gc --repo main"),
		a.backupTaskCmd("sync", "Copy the backups another repository lacks, chunk by chunk (resumable)", "vpool backup sync --repo main --to offsite"))
}

func (a *app) drCmd() *cobra.Command {
	return group("dr", "Disaster recovery", a.failoverCmd())
}

// readBackupKey reads the repository key: from keyFile (generated there
// when the file does not exist and gen is set) or VPOOL_BACKUP_KEY.
// Never from the command line.
func (a *app) readBackupKey(cmd *cobra.Command, keyFile string, gen bool) (string, error) {
	if keyFile == "" {
		if v, ok := a.env.lookup(backupKeyEnv); ok && v != "" {
			return v, nil
		}
		return "", usagef("give the repository key with --key-file FILE or the environment variable %s", backupKeyEnv)
	}
	b, err := os.ReadFile(keyFile)
	if err == nil {
		return string(b), nil
	}
	if !errors.Is(err, os.ErrNotExist) || !gen {
		return "", err
	}
	k := make([]byte, 32)
	rand.Read(k)
	text := api.BackupKeyPrefix + base64.StdEncoding.EncodeToString(k) + "\n"
	f, err := os.OpenFile(keyFile, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	fmt.Fprintf(errw(cmd), "wrote a new repository key to %s: keep a copy away from this site; without it the backups cannot be read\n", keyFile)
	return text, nil
}

func repoTable(w io.Writer, items []api.BackupRepoInfo) {
	row(w, "NAME", "LOCATION", "MODE", "OWNER", "KEY", "CHUNK")
	for _, r := range items {
		mode := "read-write"
		if r.ReadOnly {
			mode = "read-only"
		}
		loc := r.Path
		if r.URL != "" {
			loc = r.URL
		}
		row(w, r.Name, orDash(loc), mode, short(r.Owner, 12), r.KeyID, model.Bytes(r.ChunkSize))
	}
}

func short(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (a *app) backupRepoCreateCmd() *cobra.Command {
	var path, url, keyFile, credsFile string
	var readOnly bool
	cmd := &cobra.Command{
		Use:   "create NAME (--path DIR | --url s3://BUCKET/PREFIX?endpoint=HOST:PORT) --key-file FILE",
		Short: "Register a repository: create one in an empty directory or bucket prefix, or open the one there (another cluster's is read-only)",
		Example: `  vpool backup repo create main --path /srv/backups/main --key-file /etc/vpool/backup.key
  VPOOL_BACKUP_KEY="$(cat backup.key)" vpool backup repo create offsite --path /mnt/site-b/vpool
  vpool backup repo create cloud --url 's3://vpool-backups/site-a?endpoint=s3.eu-west-3.amazonaws.com&region=eu-west-3' \
    --key-file /etc/vpool/backup.key --s3-credentials-file /etc/vpool/s3.creds`,
		Args: exactArgs(1, "a repository name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (path == "") == (url == "") {
				return usagef("give --path DIR or --url s3://…")
			}
			req := api.BackupRepoCreateRequest{Name: args[0], Path: path, URL: url, ReadOnly: readOnly}
			if url != "" {
				var err error
				if req.S3AccessKey, req.S3SecretKey, err = a.readS3Credentials(credsFile); err != nil {
					return err
				}
			}
			key, err := a.readBackupKey(cmd, keyFile, true)
			if err != nil {
				return err
			}
			req.Key = key
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			r, err := c.CreateBackupRepo(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.print(cmd, r, func(w io.Writer) { repoTable(w, []api.BackupRepoInfo{*r}) })
		},
	}
	cmd.Flags().StringVar(&path, "path", "", "the repository's directory (the same path on servers and hosts)")
	cmd.Flags().StringVar(&url, "url", "", "an S3-compatible object store: s3://BUCKET[/PREFIX]?endpoint=HOST:PORT[&region=R][&insecure=1] (the bucket is made when absent)")
	cmd.Flags().StringVar(&credsFile, "s3-credentials-file", "", "file holding the object store's access key and secret key (two words); or env "+s3AccessEnv+" and "+s3SecretEnv)
	cmd.Flags().StringVar(&keyFile, "key-file", "", "file holding the repository key (made when absent); or env "+backupKeyEnv)
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "register it for restores only")
	return cmd
}

func (a *app) backupRepoListCmd() *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List backup repositories", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			items, err := c.ListBackupRepos(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd, items, func(w io.Writer) { repoTable(w, items) })
		},
	}
}

func (a *app) backupRepoShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show a repository and the backups it holds (its catalog)", Args: exactArgs(1, "a repository name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			r, err := c.GetBackupRepo(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			cat, err := c.RepoCatalog(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, map[string]any{"repo": r, "catalog": cat}, func(w io.Writer) {
				repoTable(w, []api.BackupRepoInfo{*r})
				fmt.Fprintln(w)
				row(w, "BACKUP", "PROJECT", "VM", "KIND", "CREATED", "SIZE", "NEW")
				for _, e := range cat.Items {
					row(w, e.ID, e.Project, e.VM, e.Kind, e.CreatedAt, model.Bytes(e.DiskBytes), model.Bytes(e.NewBytes))
				}
				for _, u := range cat.Unreadable {
					row(w, u, "-", "-", "UNREADABLE", "-", "-", "-")
				}
			})
		},
	}
}

func (a *app) backupPolicyShowCmd() *cobra.Command {
	var cluster bool
	cmd := &cobra.Command{
		Use: "show", Short: "Show the project's (or with --cluster the cluster's) backup policy", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			p, err := c.GetBackupPolicy(cmd.Context(), a.cfg.Project, cluster)
			if err != nil {
				return err
			}
			return a.print(cmd, p, func(w io.Writer) { policyFields(w, p) })
		},
	}
	cmd.Flags().BoolVar(&cluster, "cluster", false, "the cluster's policy (projects without their own use it)")
	return cmd
}

func policyFields(w io.Writer, p *model.BackupPolicy) {
	field(w, "Repository", p.Repo)
	field(w, "Every", orDash(p.Every))
	field(w, "Sync to", orDash(p.SyncTo))
	field(w, "Keep", fmt.Sprintf("last %d, daily %d, weekly %d, monthly %d", p.KeepLast, p.KeepDaily, p.KeepWeekly, p.KeepMonthly))
	if p.Limits != (model.BackupLimits{}) {
		field(w, "Limits", fmt.Sprintf("rate %d MiB/s (0: none), workers %d (0: 2)", p.Limits.RateMiBps, p.Limits.Workers))
	}
}

func (a *app) backupPolicySetCmd() *cobra.Command {
	var cluster, clear bool
	var p model.BackupPolicy
	cmd := &cobra.Command{
		Use:     "set --repo R [--every 6h] [--keep-last N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N]",
		Short:   "Set the schedule and retention of the project (or --cluster)",
		Example: "  vpool backup policy set --cluster --repo main --every 6h --keep-last 4 --keep-daily 7 --keep-weekly 4 --keep-monthly 6",
		Args:    exactArgs(0, "flags only"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			out, err := c.SetBackupPolicy(cmd.Context(), a.cfg.Project, cluster, api.BackupPolicyRequest{BackupPolicy: p, Clear: clear})
			if err != nil {
				return err
			}
			return a.print(cmd, out, func(w io.Writer) { policyFields(w, out) })
		},
	}
	f := cmd.Flags()
	f.BoolVar(&cluster, "cluster", false, "set the cluster's policy")
	f.BoolVar(&clear, "clear", false, "remove the policy")
	f.StringVar(&p.Repo, "repo", "", "repository to back up into")
	f.StringVar(&p.Every, "every", "", "interval of the schedule (e.g. 6h; none: no schedule)")
	f.StringVar(&p.SyncTo, "sync-to", "", "copy every completed backup to this repository (the second site)")
	f.IntVar(&p.KeepLast, "keep-last", 0, "keep the newest N backups of each VM")
	f.IntVar(&p.KeepDaily, "keep-daily", 0, "keep the newest backup of each of the last N days")
	f.IntVar(&p.KeepWeekly, "keep-weekly", 0, "keep the newest backup of each of the last N weeks")
	f.IntVar(&p.KeepMonthly, "keep-monthly", 0, "keep the newest backup of each of the last N months")
	f.IntVar(&p.Limits.RateMiBps, "rate", 0, "cap each backup's disk reads at N MiB/s (0: no limit)")
	f.IntVar(&p.Limits.Workers, "workers", 0, "chunks compressed and sealed at once per backup (0: the default, 2)")
	return cmd
}

func backupTable(w io.Writer, now time.Time, items []model.Backup) {
	row(w, "ID", "VM", "REPO", "PHASE", "KIND", "POINT", "PROGRESS", "READ", "NEW", "AGE", "NOTE")
	for _, b := range items {
		note := b.Error
		if note == "" {
			note = b.Reason
		}
		row(w, b.Name, b.VM, b.Repo, b.Phase, orDash(b.Kind), orDash(b.Consistency), percent(b.Progress), model.Bytes(b.Stats.ReadBytes),
			model.Bytes(b.Stats.NewBytes), age(now, b.CreatedAt), orDash(note))
	}
}

func percent(p model.Progress) string {
	if p.Total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(p.Done)/float64(p.Total))
}

// showProgress draws one progress line of a backup or restore on pb.
func showProgress(pb *progressBar, label string, p model.Progress) {
	frac := 0.0
	if p.Total > 0 {
		frac = min(1, float64(p.Done)/float64(p.Total))
	}
	pb.show(label, fmt.Sprintf("%-28s %s %3.0f%% %s of %s", label, bar(frac, 30), frac*100, model.Bytes(p.Done), model.Bytes(p.Total)))
}

func (a *app) backupCreateCmd() *cobra.Command {
	var repo string
	var limits model.BackupLimits
	var noWait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "create VM [--repo R]",
		Short: "Back up a VM now (running or stopped; incremental after the first)",
		Args:  exactArgs(1, "a VM name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			req := api.BackupCreateRequest{VM: args[0], Repo: repo}
			if cmd.Flags().Changed("rate") || cmd.Flags().Changed("workers") {
				req.Limits = &limits
			}
			b, err := c.CreateBackup(cmd.Context(), a.cfg.Project, req)
			if err != nil {
				return err
			}
			if !noWait {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				pb := newProgressBar(errw(cmd), a.env.now)
				b, err = c.WaitBackup(ctx, a.cfg.Project, b.Name, func(x *model.Backup) { showProgress(pb, "backup "+string(x.Phase), x.Progress) })
				pb.done()
				if err != nil {
					return err
				}
			}
			if perr := a.print(cmd, b, func(w io.Writer) { backupTable(w, a.env.now(), []model.Backup{*b}) }); perr != nil {
				return perr
			}
			if b.Phase == model.BackupFailed {
				return fmt.Errorf("backup %s of %s failed: %s", b.Name, b.VM, b.Error)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&repo, "repo", "", "repository (default: the policy's)")
	cmd.Flags().IntVar(&limits.RateMiBps, "rate", 0, "cap the disk reads at N MiB/s (0: no limit; default: the policy's)")
	cmd.Flags().IntVar(&limits.Workers, "workers", 0, "chunks compressed and sealed at once (0: 2; default: the policy's)")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the backup is asked for")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Hour, "how long to wait")
	return cmd
}

func (a *app) backupListCmd() *cobra.Command {
	var vm string
	cmd := &cobra.Command{
		Use: "list [--vm VM]", Short: "List backups", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			items, err := c.ListBackups(cmd.Context(), a.cfg.Project, vm)
			if err != nil {
				return err
			}
			return a.print(cmd, items, func(w io.Writer) { backupTable(w, a.env.now(), items) })
		},
	}
	cmd.Flags().StringVar(&vm, "vm", "", "only this VM's")
	return cmd
}

func (a *app) backupShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show ID", Short: "Show a backup", Args: exactArgs(1, "a backup id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			b, err := c.GetBackup(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, b, func(w io.Writer) {
				field(w, "ID", b.Name)
				field(w, "VM", b.VM)
				field(w, "Repository", b.Repo)
				field(w, "Phase", b.Phase)
				field(w, "Kind", orDash(b.Kind))
				field(w, "Parent", orDash(b.Parent))
				field(w, "Why full", orDash(b.Reason))
				field(w, "Progress", percent(b.Progress))
				field(w, "Disks", model.Bytes(b.Stats.DiskBytes))
				field(w, "Read", model.Bytes(b.Stats.ReadBytes))
				field(w, "New in repository", fmt.Sprintf("%s in %d chunks of %d", model.Bytes(b.Stats.NewBytes), b.Stats.NewChunks, b.Stats.Chunks))
				field(w, "Duration", (time.Duration(b.Stats.DurationMs) * time.Millisecond).String())
				field(w, "Error", orDash(b.Error))
			})
		},
	}
}

func (a *app) backupDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delete ID", Short: "Delete a finished backup (its chunks go at the next GC)", Args: exactArgs(1, "a backup id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			if err := c.DeleteBackup(cmd.Context(), a.cfg.Project, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup %s deleted\n", args[0])
			return nil
		},
	}
}
