package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/model"
)

func (a *app) complianceCmd() *cobra.Command {
	return group("compliance", "Data-locality compliance: where VMs ran, and whether their constraints held",
		a.complianceReportCmd())
}

// errBreaches makes `compliance report` exit non-zero when it found any.
var errBreaches = errors.New("data-locality breaches found")

func (a *app) complianceReportCmd() *cobra.Command {
	var all, breaches bool
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Every VM, its locality constraint, the hosts it ran on with times (from the audit trail), and any breach",
		Long: `List every VM with its locality constraint (the labels a host must have,
spec.placement.requiredLabels), the hosts it ran on and when — from the
placement and move decisions of the audit trail — and flag a breach
wherever a host lacked the labels: at the time of the decision, or now.
Exits 1 (after the report) when there is a breach.`,
		Example: `  vpool compliance report --all-projects
  vpool compliance report --breaches -o json`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			project := ""
			if cmd.Flags().Changed("project") {
				project = a.cfg.Project
			}
			rep, err := c.Compliance(cmd.Context(), project, all, breaches)
			if err != nil {
				return err
			}
			err = a.print(cmd, rep, func(w io.Writer) {
				row(w, "VM", "CONSTRAINT", "HOST", "RAN ON", "STATUS")
				for _, v := range rep.VMs {
					status := "ok"
					if v.Breach {
						status = "BREACH: " + strings.Join(v.Reasons, "; ")
					}
					host := orDash(v.Host)
					if v.Deleted {
						host = "(deleted)"
					}
					row(w, v.Project+"/"+v.VM, orDash(kv(v.Constraint)), host, stays(v.Stays), status)
				}
				if !rep.Since.IsZero() {
					fmt.Fprintf(w, "(the audit trail in the store begins at record %d, %s)\n", rep.FirstRecord, rep.Since.UTC().Format(time.RFC3339))
				}
			})
			if err == nil && rep.Breaches > 0 {
				return fmt.Errorf("%w: %d VMs", errBreaches, rep.Breaches)
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&all, "all-projects", "A", false, "every project (admins)")
	cmd.Flags().BoolVar(&breaches, "breaches", false, "only VMs with a breach")
	return cmd
}

func stays(ss []model.HostStay) string {
	if len(ss) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(ss))
	for _, s := range ss {
		p := s.Host
		switch {
		case !s.Recorded:
			p += " (before the trail)"
		case s.Until.IsZero():
			p += " since " + s.Since.UTC().Format(time.RFC3339)
		default:
			p += " " + s.Since.UTC().Format(time.RFC3339) + "…" + s.Until.UTC().Format(time.RFC3339)
		}
		if !s.OK {
			p += " !"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}
