package audit

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vpool/vpool/internal/model"
)

// Compliance builds the data-locality report: every VM (those that exist,
// and those the records name), its locality constraint, the hosts it ran
// on with times — from the decisions in records (placements, finished
// moves, HA restarts), in chain order — and a breach wherever a host did
// not carry the labels the constraint names: as recorded at the time of
// the decision, or as the host's labels say now for the VM's current
// host.
func Compliance(vms []*model.VM, hosts map[string]*model.Host, records []model.AuditRecord) []model.ComplianceVM {
	byVM := map[string]*model.ComplianceVM{}
	get := func(project, name string) *model.ComplianceVM {
		k := project + "/" + name
		c := byVM[k]
		if c == nil {
			c = &model.ComplianceVM{Project: project, VM: name, Stays: []model.HostStay{}, Deleted: true}
			byVM[k] = c
		}
		return c
	}
	for i := range records {
		r := &records[i]
		if r.Kind != model.AuditKindDecision || !startsStay(r.Action) || r.Host == "" {
			continue
		}
		project, name, ok := vmOf(r.Object)
		if !ok {
			continue
		}
		c := get(project, name)
		if n := len(c.Stays); n > 0 && c.Stays[n-1].Until.IsZero() {
			c.Stays[n-1].Until = r.Time
		}
		if r.Constraint != nil {
			c.Constraint = r.Constraint
		}
		c.Stays = append(c.Stays, model.HostStay{Host: r.Host, Since: r.Time, HostLabels: r.HostLabels, Recorded: true,
			OK: satisfies(r.Constraint, r.HostLabels)})
	}
	for _, vm := range vms {
		c := get(vm.Project, vm.Name)
		c.Deleted, c.Host = false, vm.Status.Host
		c.Constraint = vm.Spec.Placement.RequiredLabels
		current(c, hosts[vm.Status.Host])
	}
	out := make([]model.ComplianceVM, 0, len(byVM))
	for _, c := range byVM {
		judge(c)
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Project != out[j].Project {
			return out[i].Project < out[j].Project
		}
		return out[i].VM < out[j].VM
	})
	return out
}

// startsStay says a decision puts a VM on its Host.
func startsStay(action string) bool {
	return action == model.AuditPlace || action == model.AuditMoved || action == model.AuditHARestart
}

// vmOf reads "vm/<project>/<name>".
func vmOf(object string) (project, name string, ok bool) {
	rest, ok := strings.CutPrefix(object, "vm/")
	if !ok {
		return "", "", false
	}
	project, name, ok = strings.Cut(rest, "/")
	return project, name, ok && name != "" && !strings.Contains(name, "/")
}

// current reconciles the VM's present host with its last stay: a stay
// from before the trail's window, or a host that has moved on.
func current(c *model.ComplianceVM, h *model.Host) {
	n := len(c.Stays)
	if c.Host == "" {
		if n > 0 && c.Stays[n-1].Until.IsZero() && !c.Stays[n-1].Recorded {
			c.Stays = c.Stays[:n-1]
		}
		return
	}
	if n == 0 || c.Stays[n-1].Host != c.Host || !c.Stays[n-1].Until.IsZero() {
		c.Stays = append(c.Stays, model.HostStay{Host: c.Host})
		n++
	}
	if h == nil {
		return
	}
	last := &c.Stays[n-1]
	labels := map[string]string{}
	for k := range c.Constraint {
		labels[k] = h.Labels[k]
	}
	ok := satisfies(c.Constraint, labels)
	if !last.Recorded {
		last.HostLabels, last.OK = labels, ok
	}
	if !ok {
		c.Reasons = append(c.Reasons, fmt.Sprintf("runs now on %s, whose labels (%s) do not satisfy %s", c.Host, pairs(labels), pairs(c.Constraint)))
	}
}

// judge marks a breach for every stay that broke the constraint.
func judge(c *model.ComplianceVM) {
	for _, s := range c.Stays {
		if !s.OK && s.Recorded {
			c.Reasons = append(c.Reasons, fmt.Sprintf("ran on %s from %s (labels %s; required %s)",
				s.Host, s.Since.UTC().Format("2006-01-02T15:04:05Z"), pairs(s.HostLabels), pairs(c.Constraint)))
		}
	}
	c.Breach = len(c.Reasons) > 0
}

// satisfies says labels carry every label of constraint.
func satisfies(constraint, labels map[string]string) bool {
	for k, v := range constraint {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func pairs(m map[string]string) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}
