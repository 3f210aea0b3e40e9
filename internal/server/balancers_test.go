package server

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestBalancerBadInput: every refusal of a load balancer or scaling
// group request names its field, says what to do and changes nothing.
func TestBalancerBadInput(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, `{"name":"other","quota":{"vms":3}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/networks", admin, `{"name":"n1","spec":{"subnet":"10.1.0.0/24"}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/networks", admin, `{"name":"n2","spec":{"subnet":"10.2.0.0/24"}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/networks?project=other", admin, `{"name":"n1","spec":{"subnet":"10.1.0.0/24"}}`, nil)
	// v1's address is fixed: one picked at random was 10.1.0.50, the
	// balancer's below, once in CI (1 in 253)
	ts.mustCall(201, "POST", "/api/v1/vms", admin, `{"name":"v1","spec":{"vcpus":1,"memory":67108864,"nics":[{"network":"n1","ip":"10.1.0.10"}]}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/vms", admin, `{"name":"bare","spec":{"vcpus":1,"memory":67108864}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/vms?project=other", admin, `{"name":"theirs","spec":{"vcpus":1,"memory":67108864,"nics":[{"network":"n1"}]}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/lbs", admin, `{"name":"web","spec":{"network":"n1","listen":80,"ip":"10.1.0.50","members":{"vms":["v1"]}}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/groups", admin, `{"name":"g0","spec":{"template":{"vcpus":1,"memory":67108864},"min":0,"max":2}}`, nil)
	lb := func(spec string) string { return `{"name":"api","spec":` + spec + `}` }
	grp := func(spec string) string {
		return `{"name":"g","spec":{"template":{"vcpus":1,"memory":67108864,"nics":[{"network":"n1"}]},` + spec + `}}`
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		field                    string
	}{
		{"port 70000", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":70000}`), 400, "spec.listen"},
		{"port 0", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":0}`), 400, "spec.listen"},
		{"member port 70000", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"memberPort":70000}`), 400, "spec.memberPort"},
		{"unknown network", "POST", "/api/v1/lbs", lb(`{"network":"nope","listen":80}`), 400, "spec.network"},
		{"unknown algorithm", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"algorithm":"random"}`), 400, "spec.algorithm"},
		{"a member of another project", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"members":{"vms":["other/theirs"]}}`), 400, "spec.members.vms[0]"},
		{"another project's VM by name", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"members":{"vms":["theirs"]}}`), 400, "spec.members.vms[0]"},
		{"a member without a NIC on the network", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"members":{"vms":["bare"]}}`), 400, "spec.members.vms[0]"},
		{"a member on another network", "POST", "/api/v1/lbs", lb(`{"network":"n2","listen":80,"members":{"vms":["v1"]}}`), 400, "spec.members.vms[0]"},
		{"a member twice", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"members":{"vms":["v1","v1"]}}`), 400, "spec.members.vms[1]"},
		{"unknown group", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"members":{"group":"nope"}}`), 400, "spec.members.group"},
		{"VIP outside the subnet", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"ip":"10.9.0.1"}`), 400, "spec.ip"},
		{"VIP taken", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"ip":"10.1.0.50"}`), 409, "spec.ip"},
		{"check interval 10 ms", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"healthCheck":{"intervalMs":10}}`), 400, "spec.healthCheck.intervalMs"},
		{"check timeout over the interval", "POST", "/api/v1/lbs", lb(`{"network":"n1","listen":80,"healthCheck":{"intervalMs":500,"timeoutMs":900}}`), 400, "spec.healthCheck.timeoutMs"},
		{"name taken", "POST", "/api/v1/lbs", `{"name":"web","spec":{"network":"n1","listen":81}}`, 409, ""},
		{"patch: bad algorithm", "PATCH", "/api/v1/lbs/web", `{"algorithm":"random"}`, 400, "algorithm"},
		{"patch: a member of another project", "PATCH", "/api/v1/lbs/web", `{"members":{"vms":["theirs"]}}`, 400, "members.vms[0]"},
		{"patch: drain 0", "PATCH", "/api/v1/lbs/web", `{"drainTimeoutSeconds":0}`, 400, "drainTimeoutSeconds"},
		{"patch: unknown balancer", "PATCH", "/api/v1/lbs/nope", `{"algorithm":"source"}`, 404, ""},
		{"min over max", "POST", "/api/v1/groups", grp(`"min":5,"max":2`), 400, "spec.min"},
		{"max 0", "POST", "/api/v1/groups", grp(`"min":0,"max":0`), 400, "spec.max"},
		{"target 150%", "POST", "/api/v1/groups", grp(`"min":1,"max":2,"targetCpuPercent":150`), 400, "spec.targetCpuPercent"},
		{"unknown balancer", "POST", "/api/v1/groups", grp(`"min":1,"max":2,"lb":"nope"`), 400, "spec.lb"},
		{"template without a NIC on the balancer's network", "POST", "/api/v1/groups",
			`{"name":"g","spec":{"template":{"vcpus":1,"memory":67108864},"min":1,"max":2,"lb":"web"}}`, 400, "spec.template.nics"},
		{"template with a fixed address", "POST", "/api/v1/groups",
			`{"name":"g","spec":{"template":{"vcpus":1,"memory":67108864,"nics":[{"network":"n1","ip":"10.1.0.9"}]},"min":1,"max":2}}`, 400, "spec.template.nics[0].ip"},
		{"template on an unknown network", "POST", "/api/v1/groups",
			`{"name":"g","spec":{"template":{"vcpus":1,"memory":67108864,"nics":[{"network":"nope"}]},"min":1,"max":2}}`, 400, "spec.template.nics[0].network"},
		{"bad template", "POST", "/api/v1/groups", `{"name":"g","spec":{"template":{"vcpus":0,"memory":67108864},"min":1,"max":2}}`, 400, "spec.template.vcpus"},
		{"template's own affinity", "POST", "/api/v1/groups",
			`{"name":"g","spec":{"template":{"vcpus":1,"memory":67108864,"placement":{"affinityGroup":"x"}},"min":1,"max":2}}`, 400, "spec.template.placement.affinityGroup"},
		{"bad schedule time", "POST", "/api/v1/groups", grp(`"min":1,"max":2,"schedules":[{"name":"day","start":"25:00","end":"18:00","min":1,"max":2}]`), 400, "spec.schedules[0].start"},
		{"bad schedule day", "POST", "/api/v1/groups", grp(`"min":1,"max":2,"schedules":[{"name":"day","days":["monday"],"start":"08:00","end":"18:00","min":1,"max":2}]`), 400, "spec.schedules[0].days[0]"},
		{"schedule min over max", "POST", "/api/v1/groups", grp(`"min":1,"max":2,"schedules":[{"name":"day","start":"08:00","end":"18:00","min":3,"max":2}]`), 400, "spec.schedules[0].min"},
		{"bad anti-affinity", "POST", "/api/v1/groups", grp(`"min":1,"max":2,"antiAffinity":"strict"`), 400, "spec.antiAffinity"},
		{"minimum over the quota", "POST", "/api/v1/groups?project=other", `{"name":"g","spec":{"template":{"vcpus":1,"memory":67108864},"min":3,"max":4}}`, 403, "spec.min"},
		{"patch: fall 11", "PATCH", "/api/v1/lbs/web", `{"healthCheck":{"fall":11}}`, 400, "healthCheck.fall"},
		{"patch: min over max", "PATCH", "/api/v1/groups/g0", `{"min":3}`, 400, "min"},
		{"patch: unknown group", "PATCH", "/api/v1/groups/nope", `{"min":1}`, 404, ""},
	}
	before := snapshot(t, ts.st)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, e := ts.call(tt.method, tt.path, admin, tt.body, nil)
			if code != tt.status || e.Field != tt.field || e.Message == "" {
				t.Fatalf("%s %s %.90s = %d %+v; want %d field %q", tt.method, tt.path, tt.body, code, e, tt.status, tt.field)
			}
		})
	}
	after := snapshot(t, ts.st)
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("refused requests changed the store (-before +after):\n%s", d)
	}
}
