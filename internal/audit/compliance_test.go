package audit

import (
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

func TestCompliance(t *testing.T) {
	eu, us := map[string]string{"region": "eu"}, map[string]string{"region": "us"}
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	dec := func(h int, action, vm, host string, constraint, labels map[string]string) model.AuditRecord {
		return model.AuditRecord{Time: at(h), Kind: model.AuditKindDecision, Action: action, Object: "vm/p/" + vm, Host: host,
			Constraint: constraint, HostLabels: labels}
	}
	records := []model.AuditRecord{
		dec(1, model.AuditPlace, "good", "h1", eu, eu),
		dec(2, model.AuditMoveStart, "good", "h3", eu, eu), // a start is no stay
		dec(3, model.AuditMoved, "good", "h3", eu, eu),
		dec(1, model.AuditPlace, "bad", "h1", eu, eu),
		dec(4, model.AuditMoved, "bad", "h2", eu, us), // how, is another matter: the report says it happened
		dec(5, model.AuditMoved, "bad", "h1", eu, eu),
		dec(1, model.AuditPlace, "relabelled", "h4", eu, eu),
		dec(1, model.AuditPlace, "gone", "h2", nil, nil),
		{Time: at(1), Kind: model.AuditKindAPI, Action: "POST /api/v1/vms", Object: "vm/p/api"},
	}
	vm := func(name, host string, constraint map[string]string) *model.VM {
		return &model.VM{Meta: model.Meta{Name: name, Project: "p"}, Spec: model.VMSpec{Placement: model.Placement{RequiredLabels: constraint}},
			Status: model.VMStatus{Host: host}}
	}
	vms := []*model.VM{vm("good", "h3", eu), vm("bad", "h1", eu), vm("relabelled", "h4", eu), vm("old", "h1", eu), vm("free", "h2", nil)}
	hosts := map[string]*model.Host{
		"h1": {Labels: eu}, "h2": {Labels: us}, "h3": {Labels: eu},
		"h4": {Labels: us}, // relabelled after the placement
	}
	got := map[string]model.ComplianceVM{}
	for _, c := range Compliance(vms, hosts, records) {
		got[c.VM] = c
	}
	tests := []struct {
		vm      string
		stays   []string // host@since-hour…until-hour
		breach  string   // a reason contains it ("" none)
		deleted bool
	}{
		{vm: "good", stays: []string{"h1 1-3", "h3 3-"}},
		{vm: "bad", stays: []string{"h1 1-4", "h2 4-5", "h1 5-"}, breach: "ran on h2"},
		{vm: "relabelled", stays: []string{"h4 1-"}, breach: "runs now on h4"},
		{vm: "old", stays: []string{"h1 ?"}},  // placed before the trail's window
		{vm: "free", stays: []string{"h2 ?"}}, // no constraint
		{vm: "gone", stays: []string{"h2 1-"}, deleted: true},
	}
	for _, tt := range tests {
		c, ok := got[tt.vm]
		if !ok {
			t.Errorf("%s missing from the report", tt.vm)
			continue
		}
		var stays []string
		for _, s := range c.Stays {
			d := s.Host + " ?"
			if s.Recorded {
				d = s.Host + " " + hour(s.Since) + "-"
				if !s.Until.IsZero() {
					d += hour(s.Until)
				}
			}
			stays = append(stays, d)
		}
		if strings.Join(stays, ",") != strings.Join(tt.stays, ",") {
			t.Errorf("%s: stays %v, want %v", tt.vm, stays, tt.stays)
		}
		if c.Breach != (tt.breach != "") || (tt.breach != "" && !strings.Contains(strings.Join(c.Reasons, ";"), tt.breach)) {
			t.Errorf("%s: breach %v %v, want %q", tt.vm, c.Breach, c.Reasons, tt.breach)
		}
		if c.Deleted != tt.deleted {
			t.Errorf("%s: deleted %v", tt.vm, c.Deleted)
		}
	}
	if _, ok := got["api"]; ok {
		t.Error("an API record made a stay")
	}
}

func hour(t time.Time) string { return time.Duration(t.Sub(t0) / time.Hour * time.Hour).String()[:1] }
