package server

import (
	"context"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// seedBalancers adds to the fixture, in alpha: load balancer lb1 on net1
// (served by h1, member vm2, with a planted error from its host) and
// lbfree; scaling groups g1 (behind lb1) and gfree.
func seedBalancers(t testing.TB, s *Server) {
	t.Helper()
	ctx := context.Background()
	repo := s.repo
	for _, name := range []string{"lb1", "lbfree"} {
		spec := model.LBSpec{Network: "net1", Listen: 80, Members: model.LBMembers{VMs: []string{"vm2"}}}
		if err := spec.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.CreateLB(ctx, &model.LoadBalancer{Meta: model.Meta{Name: name, Project: "alpha"}, Spec: spec}, "0a:00:00:00:01:01"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := repo.UpdateLB(ctx, "alpha", "lb1", func(b *model.LoadBalancer) ([]model.Event, error) {
		b.Status.Phase, b.Status.Host = model.LBActive, "h1"
		b.Status.Members = []model.LBMember{{VM: "vm2", IP: "10.10.0.10", State: model.MemberActive}}
		b.Status.Observed = &model.LBObserved{At: s.now(), Host: "h1", Running: false, Error: plantedError}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct{ name, lb string }{{"g1", "lb1"}, {"gfree", ""}} {
		spec := model.GroupSpec{Template: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, NICs: []model.NIC{{Network: "net1"}}}, Min: 0, Max: 2, LB: g.lb}
		if err := spec.Validate(); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.CreateGroup(ctx, &model.ScalingGroup{Meta: model.Meta{Name: g.name, Project: "alpha"}, Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
}

// balancerFuzzSeeds are the hostile values in every field of the load
// balancer and scaling group bodies.
func balancerFuzzSeeds() []fuzzSeed {
	var out []fuzzSeed
	add := func(route string, body string) {
		out = append(out, fuzzSeed{route: route, role: seedMember, body: body}, fuzzSeed{route: route, role: seedAdmin, body: body})
	}
	tmpl := `{"vcpus":1,"memory":67108864}`
	for _, n := range hostileNumbers {
		add("POST /api/v1/lbs", `{"name":"l9","spec":{"network":"net1","listen":`+n+`,"memberPort":`+n+`,"drainTimeoutSeconds":`+n+`}}`)
		add("POST /api/v1/lbs", `{"name":"l9","spec":{"network":"net1","listen":80,"healthCheck":{"intervalMs":`+n+`,"timeoutMs":`+n+`,"rise":`+n+`,"fall":`+n+`}}}`)
		add("PATCH /api/v1/lbs/{name}", `{"drainTimeoutSeconds":`+n+`,"healthCheck":{"fall":`+n+`}}`)
		add("POST /api/v1/groups", `{"name":"g9","spec":{"template":`+tmpl+`,"min":`+n+`,"max":`+n+`,"targetCpuPercent":`+n+`}}`)
		add("POST /api/v1/groups", `{"name":"g9","spec":{"template":`+tmpl+`,"min":1,"max":2,"scaleOutCooldownSeconds":`+n+`,"scaleInCooldownSeconds":`+n+`}}`)
		add("PATCH /api/v1/groups/{name}", `{"min":`+n+`,"max":`+n+`,"targetCpuPercent":`+n+`}`)
	}
	for _, s := range append(hostileStrings, "10.10.0.100", "10.10.0.1", "vm1", "beta/bvm", "lb1", "g1", "25:00", "mon-fri") {
		q := jsonString(s)
		add("POST /api/v1/lbs", `{"name":`+q+`,"spec":{"network":`+q+`,"listen":80,"algorithm":`+q+`,"ip":`+q+`,"description":`+q+`}}`)
		add("POST /api/v1/lbs", `{"name":"l8","spec":{"network":"net1","listen":80,"members":{"group":`+q+`,"vms":[`+q+`]}}}`)
		add("PATCH /api/v1/lbs/{name}", `{"algorithm":`+q+`,"members":{"vms":[`+q+`]}}`)
		add("POST /api/v1/groups", `{"name":`+q+`,"spec":{"template":`+tmpl+`,"min":1,"max":2,"lb":`+q+`,"antiAffinity":`+q+`}}`)
		add("POST /api/v1/groups", `{"name":"g8","spec":{"template":{"vcpus":1,"memory":67108864,"nics":[{"network":`+q+`,"ip":`+q+`}]},"min":1,"max":2}}`)
		add("PATCH /api/v1/groups/{name}", `{"schedules":[{"name":`+q+`,"days":[`+q+`],"start":`+q+`,"end":`+q+`,"min":1,"max":2}]}`)
		for _, route := range []string{"GET /api/v1/lbs/{name}", "DELETE /api/v1/lbs/{name}", "GET /api/v1/groups/{name}", "DELETE /api/v1/groups/{name}"} {
			out = append(out, fuzzSeed{route: route, role: seedMember, param: s})
		}
	}
	for _, route := range []string{"POST /api/v1/lbs", "PATCH /api/v1/lbs/{name}", "POST /api/v1/groups", "PATCH /api/v1/groups/{name}"} {
		for _, b := range []string{"null", "", "[]", "{}", "{", `{"z":1}`} {
			add(route, b)
		}
	}
	return out
}
