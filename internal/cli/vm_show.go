package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// describeVM writes the human view of one VM: identity, spec, status and
// the placement explanation.
func (a *app) describeVM(w io.Writer, vm *model.VM) {
	now := a.env.now()
	s, st := &vm.Spec, &vm.Status
	field(w, "Name", vm.Name)
	field(w, "Project", vm.Project)
	field(w, "UID", vm.UID)
	field(w, "Phase", orDash(string(st.Phase)))
	field(w, "Power", powerText(vm))
	field(w, "Host", orDash(st.Host))
	field(w, "Message", st.Message)
	field(w, "Last error", st.LastError)
	field(w, "Created", stamp(now, vm.CreatedAt))
	if st.StartedAt != nil {
		field(w, "Started", stamp(now, *st.StartedAt))
	}
	if vm.DeletedAt != nil {
		field(w, "Deleting since", stamp(now, *vm.DeletedAt))
	}
	field(w, "VCPUs", s.VCPUs)
	field(w, "Memory", s.Memory)
	field(w, "Image", s.Image)
	for i, d := range s.Disks {
		field(w, fmt.Sprintf("Disk %d", i), diskText(d))
	}
	for i, n := range s.NICs {
		field(w, fmt.Sprintf("NIC %d", i), strings.TrimSpace(n.Network+" "+n.MAC))
	}
	field(w, "Addresses", strings.Join(st.Addresses, ", "))
	field(w, "Labels", kv(s.Labels))
	field(w, "Placement", placementText(s.Placement))
	field(w, "Controls", controlsText(s.Controls))
	field(w, "Cloud-init", cloudInitText(s.CloudInit))
	if s.HA != "" {
		field(w, "HA", s.HA)
	}
	if s.HAPriority != 0 {
		field(w, "HA priority", s.HAPriority)
	}
	field(w, "HA cannot restart", st.HAReason)
	if wd := s.Watchdog; wd != nil {
		field(w, "Watchdog", fmt.Sprintf("%s (when it fires: %s)", wd.Model, wd.Action))
	}
	if f := st.Watchdog; f != nil {
		field(w, "Watchdog fired", fmt.Sprintf("%s, action %s (%d times in that run)", stamp(now, f.At), f.Action, f.Count))
	}
	if st.Owner != nil {
		field(w, "Disk owner", fmt.Sprintf("%s (epoch %d)", st.Owner.Host, st.Owner.Epoch))
	}
	if st.Phase == model.PhaseRunning || st.Usage.CPUTimeNs > 0 {
		field(w, "Usage", fmt.Sprintf("cpu %.1f%%, memory %s, disk read %s write %s, net rx %s tx %s",
			st.Usage.CPUPercent, st.Usage.Memory, model.Bytes(st.Usage.DiskRead), model.Bytes(st.Usage.DiskWrite),
			model.Bytes(st.Usage.NetRx), model.Bytes(st.Usage.NetTx)))
	}
	if st.Explanation != nil {
		io.WriteString(w, "\n")
		writeExplanation(w, st.Explanation)
	}
}

// observedPower is whether the VM's guest runs, as its phase tells.
func observedPower(p model.Phase) string {
	switch p {
	case model.PhaseRunning, model.PhaseStopping:
		return "on"
	case model.PhasePaused:
		return "paused"
	}
	return "off"
}

// powerText says whether the VM runs and, when that is not what was
// asked for, what was: a VM whose start failed is off, not running.
func powerText(vm *model.VM) string {
	obs, want := observedPower(vm.Status.Phase), vm.Spec.Power
	switch {
	case want == model.PowerRunning && obs != "off", want == model.PowerStopped && obs == "off":
		return obs
	case want == model.PowerRunning && vm.Status.Phase == model.PhaseFailed && vm.Status.Host != "":
		return "off (asked to run: its host retries with backoff; 'vpool vm stop' gives up)"
	case want == model.PowerRunning && vm.Status.Phase == model.PhaseFailed:
		return "off (asked to run: it waits for a host)"
	}
	return obs + " (asked: " + string(want) + ")"
}

func diskText(d model.Disk) string {
	parts := []string{orDash(d.Name), d.Size.String()}
	if d.Pool != "" {
		parts = append(parts, "pool="+d.Pool)
	}
	if d.Tier != "" {
		parts = append(parts, "tier="+d.Tier)
	}
	if d.Encrypted {
		parts = append(parts, "encrypted")
	}
	return strings.Join(parts, " ")
}

func placementText(p model.Placement) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+" "+v)
		}
	}
	add("require", kv(p.RequiredLabels))
	add("prefer", kv(p.PreferredLabels))
	add("isolation-domain", p.IsolationDomain)
	if p.AffinityGroup != "" {
		add("group", p.AffinityGroup+" ("+orDash(p.Affinity)+")")
	}
	if p.MaxPerHost > 0 {
		add("max-per-host", fmt.Sprint(p.MaxPerHost))
	}
	add("host", p.Host)
	return strings.Join(parts, "; ")
}

func controlsText(c model.Controls) string {
	var parts []string
	if c.CPUShares != 0 {
		parts = append(parts, fmt.Sprintf("cpu-shares %d", c.CPUShares))
	}
	if c.CPUReservation != 0 {
		parts = append(parts, "cpu-reservation "+num(float64(c.CPUReservation)/1000))
	}
	if c.CPULimit != 0 {
		parts = append(parts, "cpu-limit "+num(float64(c.CPULimit)/1000))
	}
	if c.MemoryReservation != 0 {
		parts = append(parts, "memory-reservation "+c.MemoryReservation.String())
	}
	if c.MemoryLimit != 0 {
		parts = append(parts, "memory-limit "+c.MemoryLimit.String())
	}
	if c.DiskIOPS != 0 {
		parts = append(parts, fmt.Sprintf("disk-iops %d", c.DiskIOPS))
	}
	if c.DiskBps != 0 {
		parts = append(parts, "disk-bps "+model.Bytes(c.DiskBps).String()+"/s")
	}
	return strings.Join(parts, ", ")
}

// writeExplanation renders the scheduler's explanation: the summary, how
// many hosts each filter rejected and why, and the top candidates with
// their score parts.
func writeExplanation(w io.Writer, e *model.Explanation) {
	head := "Placement"
	if !e.Time.IsZero() {
		head += " (" + e.Time.UTC().Format("2006-01-02T15:04:05Z") + ")"
	}
	fmt.Fprintf(w, "%s:\t%s\n", head, orDash(e.Summary))
	fmt.Fprintf(w, "  Hosts considered:\t%d\n", e.Hosts)
	if e.Chosen != "" {
		fmt.Fprintf(w, "  Chosen:\t%s\n", e.Chosen)
	}
	if len(e.Filters) > 0 {
		io.WriteString(w, "  Rejected by filters:\n")
		row(w, "    FILTER", "REJECTED", "REASON")
		for _, f := range e.Filters {
			row(w, "    "+f.Filter, f.Rejected, orDash(f.Reason))
		}
	}
	if len(e.Candidates) > 0 {
		io.WriteString(w, "  Top candidates:\n")
		row(w, "    HOST", "SCORE", "PARTS")
		for _, c := range e.Candidates {
			row(w, "    "+c.Host, fmt.Sprintf("%.2f", c.Score), scoreParts(c.Parts))
		}
	}
}

// scoreParts renders score parts sorted by name: "balance=0.40 binpack=0.85".
func scoreParts(parts map[string]float64) string {
	names := make([]string, 0, len(parts))
	for k := range parts {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]string, len(names))
	for i, k := range names {
		out[i] = fmt.Sprintf("%s=%.2f", k, parts[k])
	}
	return orDash(strings.Join(out, " "))
}

// printDryRun shows a dry run's answer. A VM that would not fit is a
// failure (exit code 1) after the explanation was printed.
func (a *app) printDryRun(cmd *cobra.Command, name string, res *api.DryRunResponse) error {
	err := a.print(cmd, res, func(w io.Writer) {
		io.WriteString(w, dryRunLine(name, res)+" (dry run: nothing was created)\n")
		if res.Explanation != nil {
			io.WriteString(w, "\n")
			writeExplanation(w, res.Explanation)
		}
	})
	if err != nil || res.Fits {
		return err
	}
	return fmt.Errorf("vm %s would not fit: %s", name, notFitSummary(res))
}

// printDryRuns shows a batch dry run: one line per VM, and the
// explanation of the first VM that would not fit.
func (a *app) printDryRuns(cmd *cobra.Command, prefix string, res []api.DryRunResponse) error {
	misfit := -1
	for i := range res {
		if !res[i].Fits && misfit < 0 {
			misfit = i
		}
	}
	name := func(i int) string { return fmt.Sprintf("%s-%d", prefix, i+1) }
	err := a.print(cmd, res, func(w io.Writer) {
		for i := range res {
			io.WriteString(w, dryRunLine(name(i), &res[i])+"\n")
		}
		io.WriteString(w, "(dry run: nothing was created)\n")
		if misfit >= 0 && res[misfit].Explanation != nil {
			fmt.Fprintf(w, "\nWhy %s would not fit:\n", name(misfit))
			writeExplanation(w, res[misfit].Explanation)
		}
	})
	if err != nil || misfit < 0 {
		return err
	}
	return fmt.Errorf("vm %s would not fit: %s", name(misfit), notFitSummary(&res[misfit]))
}

func dryRunLine(name string, res *api.DryRunResponse) string {
	if res.Fits {
		return "vm " + name + " would be placed on " + orDash(res.Host)
	}
	return "vm " + name + " would not fit"
}

func notFitSummary(res *api.DryRunResponse) string {
	if res.Explanation != nil && res.Explanation.Summary != "" {
		return res.Explanation.Summary
	}
	return "no host fits"
}

// cloudInitText sums up a VM's seed. Its user data is write-only: the
// server shows its size and a keyed digest (equal documents, equal
// digests), never the document.
func cloudInitText(ci *model.CloudInit) string {
	if ci == nil {
		return ""
	}
	var parts []string
	if ci.Hostname != "" {
		parts = append(parts, "host name "+ci.Hostname)
	}
	if n := len(ci.SSHKeys); n > 0 {
		parts = append(parts, fmt.Sprintf("%d SSH key(s)", n))
	}
	if ci.UserDataSize > 0 {
		d := ci.UserDataDigest
		if len(d) > 28 {
			d = d[:28] + "…"
		}
		parts = append(parts, fmt.Sprintf("user data %d bytes (%s, write-only)", ci.UserDataSize, d))
	}
	if len(parts) == 0 {
		return "an empty seed"
	}
	return strings.Join(parts, ", ")
}
