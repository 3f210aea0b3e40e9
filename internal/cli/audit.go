package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) auditCmd() *cobra.Command {
	return group("audit", "List, export and verify the audit trail",
		a.auditListCmd(), a.auditExportCmd(), a.auditVerifyCmd())
}

func (a *app) auditListCmd() *cobra.Command {
	var q client.AuditQuery
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "The newest audit records (a project's members see that project's only)",
		Example: `  vpool audit list --limit 20
  vpool audit list --all-projects --kind decision
  vpool audit list --object vm/team-a/web1`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("project") {
				q.Project = a.cfg.Project
			}
			l, err := c.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			return a.print(cmd, l.Items, func(w io.Writer) {
				row(w, "SEQ", "TIME", "KIND", "ACTION", "OBJECT", "OUTCOME", "BY", "DETAIL")
				for _, r := range l.Items {
					row(w, r.Seq, r.Time.UTC().Format(time.RFC3339), r.Kind, orDash(r.Action), orDash(r.Object), auditOutcome(r), auditBy(r), orDash(auditDetail(r)))
				}
			})
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&q.AllProjects, "all-projects", "A", false, "every project's records and the cluster's (admins)")
	f.StringVar(&q.Kind, "kind", "", "api, decision, checkpoint or gap")
	f.StringVar(&q.Object, "object", "", "records whose object starts with this (vm/PROJECT/NAME, host/NAME)")
	f.IntVar(&q.Limit, "limit", 50, "how many records (at most 1000)")
	f.Int64Var(&q.Before, "before", 0, "records older than this sequence number (page back)")
	return cmd
}

func auditOutcome(r model.AuditRecord) string {
	if r.Status != 0 {
		return fmt.Sprintf("%s %d", r.Outcome, r.Status)
	}
	return orDash(r.Outcome)
}

func auditBy(r model.AuditRecord) string {
	switch {
	case r.Actor == nil:
		return orDash(r.Server)
	case r.Actor.TokenID == "":
		return "anonymous@" + r.Actor.Source
	}
	who := "token " + r.Actor.TokenID + " (" + string(r.Actor.Role)
	if len(r.Actor.Scopes) > 0 {
		who += " " + strings.Join(r.Actor.Scopes, ",")
	}
	return who + ")@" + r.Actor.Source
}

func auditDetail(r model.AuditRecord) string {
	var parts []string
	if r.From != "" {
		parts = append(parts, r.From+" → "+r.Host)
	} else if r.Host != "" && r.Kind == model.AuditKindDecision {
		parts = append(parts, "on "+r.Host)
	}
	if r.Code != "" {
		parts = append(parts, r.Code)
	}
	if r.Reason != "" {
		parts = append(parts, r.Reason)
	}
	if r.Checkpoint != nil {
		parts = append(parts, fmt.Sprintf("signs record %d with key %s", r.Checkpoint.Seq, r.Checkpoint.KeyID))
	}
	return strings.Join(parts, ": ")
}

func (a *app) auditExportCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "export --file FILE",
		Short: "Append the records the file lacks to an append-only export file (one record per line)",
		Long: `Append to FILE every record after the last one it holds, exactly as stored, so
that the file keeps the chain after the store has pruned it. Run it as
often as you like (from cron, say): each run appends what is new. A file
whose last record the store has pruned already continues in the servers'
own export files (DATA_DIR/audit on the leader).`,
		Example: `  vpool audit export --file /var/backups/vpool-audit.jsonl
  vpool audit verify --file /var/backups/vpool-audit.jsonl`,
		Args: exactArgs(0, "no arguments (name the file with --file)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef("--file is required")
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			n, first, last, err := exportTo(cmd.Context(), c, file)
			if err != nil {
				return err
			}
			if n == 0 {
				fmt.Fprintf(outw(cmd), "%s is up to date (last record %d)\n", file, last)
				return nil
			}
			fmt.Fprintf(outw(cmd), "appended %d records (%d to %d) to %s\n", n, first, last, file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the export file (created 0600 when missing)")
	return cmd
}

// ErrExportGap says the store no longer holds the records an export
// file needs next.
var ErrExportGap = errors.New("cli: the store no longer holds the records this file needs next")

// exportTo appends to path the records after its last one.
func exportTo(ctx context.Context, c *client.Client, path string) (n int, first, last int64, err error) {
	last, lastHash, err := audit.LastRecord(path)
	if err != nil {
		return 0, 0, 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("cli: %w", err)
	}
	defer f.Close()
	err = c.EachAuditRecord(ctx, last+1, func(raw []byte) error {
		seq, prev, err := audit.Peek(raw)
		if err != nil {
			return err
		}
		if last > 0 && (seq != last+1 || prev != lastHash) {
			return fmt.Errorf("%w: the file ends at record %d and the store's next is record %d, which does not follow it; the servers' export directory (DATA_DIR/audit) holds the records between",
				ErrExportGap, last, seq)
		}
		if _, err := f.Write(append(append([]byte(nil), raw...), '\n')); err != nil {
			return fmt.Errorf("cli: write %s: %w", path, err)
		}
		if n == 0 {
			first = seq
		}
		n++
		last, lastHash = seq, audit.Hash(raw)
		return nil
	})
	if serr := f.Sync(); err == nil && serr != nil {
		err = fmt.Errorf("cli: sync %s: %w", path, serr)
	}
	return n, first, last, err
}

func (a *app) auditVerifyCmd() *cobra.Command {
	var files []string
	var keyArg string
	var maxAge time.Duration
	cmd := &cobra.Command{
		Use:   "verify [--file FILE]...",
		Short: "Verify the audit trail: name the first record edited, removed, reordered or cut off",
		Long: `Without --file, verify the records the store holds, against the signed anchor
(the last record pruned) and the signed head, with the servers' public key.
With --file, verify export files (in chain order) as one chain; the
signatures of their checkpoints need the key, read from the server unless
--key names it. Pin the key with --key (base64, or a file holding it) so
that a server cannot present a chain signed with a key of its own.`,
		Example: `  vpool audit verify
  vpool audit verify --key "$(cat audit-key.pub)"
  vpool audit verify --file audit-0001.jsonl --file audit-0002.jsonl --key audit-key.pub`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var key ed25519.PublicKey
			var err error
			if keyArg != "" {
				if key, err = readKeyArg(keyArg); err != nil {
					return usagef("--key: %v", err)
				}
			}
			var rep *audit.Report
			if len(files) > 0 {
				rep, err = a.verifyFiles(ctx, files, key)
			} else {
				rep, err = a.verifyStore(ctx, key, maxAge)
			}
			if err != nil {
				return err
			}
			return a.printReport(cmd, rep)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "file", "f", nil, "export files to verify, in chain order (repeat)")
	f.StringVar(&keyArg, "key", "", "the audit public key (base64, or a file holding it); default: the server's")
	f.DurationVar(&maxAge, "max-age", 0, "how old the signed head may be (default: what the server says it allows)")
	return cmd
}

func readKeyArg(s string) (ed25519.PublicKey, error) {
	if b, err := os.ReadFile(s); err == nil {
		s = strings.TrimSpace(string(b))
	}
	return audit.ParsePublicKey(strings.TrimSpace(s))
}

func (a *app) serverKey(ctx context.Context, c *client.Client) (ed25519.PublicKey, error) {
	k, err := c.AuditKey(ctx)
	if err != nil {
		return nil, err
	}
	return audit.ParsePublicKey(k.PublicKey)
}

func (a *app) verifyStore(ctx context.Context, key ed25519.PublicKey, maxAge time.Duration) (*audit.Report, error) {
	c, err := a.client()
	if err != nil {
		return nil, err
	}
	// the head read with the records (from the anchor on): records
	// appended between two separate reads would look like a
	// rolled-back head
	hv, recs, err := c.AuditTrail(ctx, 0)
	if err != nil {
		return nil, err
	}
	if key == nil {
		if key, err = audit.ParsePublicKey(hv.Key.PublicKey); err != nil {
			return nil, err
		}
	}
	if maxAge == 0 {
		maxAge = time.Duration(hv.MaxHeadAge) * time.Second
	}
	in := audit.Input{Records: recs, Key: key, Anchor: hv.Anchor, Now: a.env.now(), MaxHeadAge: maxAge}
	if hv.Head.Sig != "" {
		h := hv.Head.AuditSignature
		in.Head = &h
	}
	return audit.Verify(in), nil
}

func (a *app) verifyFiles(ctx context.Context, files []string, key ed25519.PublicKey) (*audit.Report, error) {
	if key == nil {
		c, err := a.client()
		if err != nil {
			return nil, err
		}
		if key, err = a.serverKey(ctx, c); err != nil {
			return nil, fmt.Errorf("%w (or give the key with --key)", err)
		}
	}
	return audit.VerifyFiles(audit.FileInput{Paths: files, Key: key})
}

// errVerifyFailed makes the command exit non-zero after printing.
var errVerifyFailed = errors.New("the audit trail does not verify")

func (a *app) printReport(cmd *cobra.Command, rep *audit.Report) error {
	err := a.print(cmd, rep, func(w io.Writer) {
		if rep.Bad != nil {
			fmt.Fprintf(w, "FAILED at record %d (%s): %s\n", rep.Bad.Seq, rep.Bad.Problem, rep.Bad.Detail)
		} else {
			fmt.Fprintf(w, "OK: %d records (%d to %d), %d checkpoints, signed through record %d\n",
				rep.Records, rep.First, rep.Last, rep.Checkpoints, rep.SignedThrough)
		}
		for _, n := range rep.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	})
	if err != nil {
		return err
	}
	if rep.Bad != nil {
		return fmt.Errorf("%w: record %d: %s", errVerifyFailed, rep.Bad.Seq, rep.Bad.Problem)
	}
	return nil
}
