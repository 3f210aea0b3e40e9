package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) haCmd() *cobra.Command {
	return group("ha", "Host high availability: failure detection, fencing, VM restarts (docs/ha.md)", a.haStatusCmd())
}

func (a *app) haStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show hosts by state, protected VMs, the failover reserve and the last failovers",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			s, err := c.HAStatus(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd, s, func(w io.Writer) { haTable(w, s) })
		},
	}
}

func haTable(w io.Writer, s *api.HAStatus) {
	field(w, "Timings", s.Policy.String())
	field(w, "Fencing", fencing(s.Policy))
	field(w, "Hosts", counts(s.Hosts))
	field(w, "Protected VMs", counts(s.Protected))
	field(w, "Unprotected VMs", len(s.Unprotected))
	for _, u := range s.Unprotected {
		field(w, "  "+u.VM, u.Reason)
	}
	r := s.Reserve
	switch {
	case r.Tolerates == 0:
		field(w, "Reserve", "none asked (cluster policy ha.tolerateHostFailures)")
	case r.OK:
		field(w, "Reserve", fmt.Sprintf("tolerates %d host failures: the worst (%s) need %d vCPUs and %s, %d vCPUs and %s spare",
			r.Tolerates, strings.Join(r.Worst, ", "), r.Need.CPUs, r.Need.Memory, r.Spare.CPUs, r.Spare.Memory))
	default:
		field(w, "Reserve", fmt.Sprintf("BROKEN: %d host failures (%s) need %d vCPUs and %s, only %d vCPUs and %s spare",
			r.Tolerates, strings.Join(r.Worst, ", "), r.Need.CPUs, r.Need.Memory, r.Spare.CPUs, r.Spare.Memory))
	}
	if len(s.Failovers) == 0 {
		field(w, "Failovers", "none")
		return
	}
	io.WriteString(w, "\nHOST\tFENCED\tBY\tDETECT\tFENCE\tRESTART\tRESTARTED\tSTUCK\n")
	for _, f := range s.Failovers {
		since := func(t time.Time) string {
			if t.IsZero() || f.LastRenewal.IsZero() {
				return "-"
			}
			return t.Sub(f.LastRenewal).Round(10 * time.Millisecond).String()
		}
		by := f.FenceBy
		if f.FenceCommandError != "" {
			by += " (command failed)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", f.Host, f.FencedAt.Format(time.RFC3339), by,
			since(f.DetectedAt), since(f.FencedAt), since(f.RestartedAt), f.Restarted, len(f.Stuck))
	}
}

// fencing says when a failed host is fenced under the policy.
func fencing(p model.HAPolicy) string {
	q := p.WithDefaults()
	at := "at the fence timeout"
	if q.FenceCommandMillis != 0 {
		at = fmt.Sprintf("%d ms after the last renewal (ha.fenceCommandMillis)", q.FenceCommandMillis)
	}
	return fmt.Sprintf("by the timeout %d ms after the last renewal (fence + margin); by the leader's --fence-cmd, if any, %s, "+
		"not within %d ms of a leader change, and at once on its success", q.FenceMillis+q.MarginMillis, at, q.FenceMillis)
}

// counts renders "a 2, b 1" in key order.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
