package controller

import (
	"context"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// Auditor records the decisions the controllers take on their own
// (docs/audit.md): placements with their reason, moves started by the
// balancer, drains and users, moves finished, hosts put to standby and
// woken. The server's audit log (internal/auditlog) satisfies it.
type Auditor interface {
	Record(ctx context.Context, rec model.AuditRecord) error
}

// noAudit records nothing (Config.Audit unset).
type noAudit struct{}

func (noAudit) Record(context.Context, model.AuditRecord) error { return nil }

// LeaderTask is work only the leader does, beside the controllers: the
// audit trail's export and pruning, metering. At the start of each term
// New makes the task's runner (its memory lives as long as the term);
// the runner gets the term's store, whose every write is fenced on the
// leadership, every Every (default: the resync interval).
type LeaderTask struct {
	Name  string
	Every time.Duration
	New   func() func(ctx context.Context, st store.Store) error
}

// decision is a decision record about vm.
func decision(action string, vm *model.VM, host, reason string) model.AuditRecord {
	rec := model.AuditRecord{Kind: model.AuditKindDecision, Action: action, Project: vm.Project,
		Object: state.VMObject(vm.Project, vm.Name), Outcome: "ok", Host: host, Reason: reason}
	if len(vm.Spec.Placement.RequiredLabels) > 0 {
		rec.Constraint = vm.Spec.Placement.RequiredLabels
	}
	return rec
}

// hostLabels returns host's values of the labels a constraint names, as
// the cache has them now (absent labels as "").
func (c *cache) hostLabels(host string, constraint map[string]string) map[string]string {
	if len(constraint) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]string, len(constraint))
	h := c.hosts[host]
	for k := range constraint {
		if h != nil {
			out[k] = h.Labels[k]
		} else {
			out[k] = ""
		}
	}
	return out
}

// record writes rec through the auditor; a failure is logged, never
// returned: the decision is committed already.
func (g *gate) record(ctx context.Context, rec model.AuditRecord) {
	if rec.Host != "" && rec.Constraint != nil {
		rec.HostLabels = g.c.hostLabels(rec.Host, rec.Constraint)
	}
	if err := g.audit.Record(ctx, rec); err != nil {
		g.log.Warn("audit record dropped", "action", rec.Action, "object", rec.Object, "err", err)
	}
}

// auditPlaced records committed placements.
func (g *gate) auditPlaced(ctx context.Context, ps []state.Assignment) {
	for _, p := range ps {
		reason := ""
		if p.Explanation != nil {
			reason = p.Explanation.Summary
		}
		g.record(ctx, decision(model.AuditPlace, p.VM, p.Host, reason))
	}
}

// auditMove records a migration the gate let start (its hold taken).
func (g *gate) auditMove(ctx context.Context, m *model.Migration) {
	vm := &model.VM{Meta: model.Meta{Name: m.VM, Project: m.Project}, Spec: m.Spec}
	reason := "requested through the API"
	switch {
	case m.Explanation != nil && m.Explanation.Summary != "":
		reason = m.Explanation.Summary
	case m.Drain != "":
		reason = "drain of host " + m.Drain
	}
	if m.Drain != "" && m.Explanation != nil {
		reason = "drain of host " + m.Drain + ": " + reason
	}
	rec := decision(model.AuditMoveStart, vm, m.Target, reason)
	rec.From = m.Source
	g.record(ctx, rec)
}

// auditMoveEnd records a migration's end: the VM moved (move.done) or
// stayed where it was (move.end, with the reason).
func (g *gate) auditMoveEnd(ctx context.Context, m *model.Migration, moved bool, reason string) {
	vm := &model.VM{Meta: model.Meta{Name: m.VM, Project: m.Project}, Spec: m.Spec}
	action, host := model.AuditMoveEnd, m.Source
	if moved {
		action, host = model.AuditMoved, m.Target
	}
	rec := decision(action, vm, host, reason)
	rec.From = m.Source
	if !moved {
		rec.Outcome = "failed"
	}
	g.record(ctx, rec)
}

// auditHost records a decision about a host (standby, wake).
func (g *gate) auditHost(ctx context.Context, action, host, reason string) {
	g.record(ctx, model.AuditRecord{Kind: model.AuditKindDecision, Action: action, Object: state.HostObject(host),
		Outcome: "ok", Host: host, Reason: reason})
}

// auditGroup records a scaling group's decision (its plan's kind and
// reason), once its status is committed.
func (g *gate) auditGroup(ctx context.Context, sg *model.ScalingGroup, kind, reason string) {
	g.record(ctx, model.AuditRecord{Kind: model.AuditKindDecision, Action: model.AuditGroupPrefix + kind, Project: sg.Project,
		Object: "group/" + sg.Project + "/" + sg.Name, Outcome: "ok", Reason: reason})
}

// auditLB records where a load balancer was put (or that no host could
// take it), with the reason of the choice.
func (g *gate) auditLB(ctx context.Context, b *model.LoadBalancer, action, from, host, reason string) {
	g.record(ctx, model.AuditRecord{Kind: model.AuditKindDecision, Action: action, Project: b.Project,
		Object: "lb/" + b.Project + "/" + b.Name, Outcome: "ok", Host: host, From: from, Reason: reason})
}
