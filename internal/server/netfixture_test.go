package server

import (
	"context"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// seedNetworks adds to the fixture: networks net1 (10.10.0.0/24, used by
// vm2's nic0 and by lb/vip at 10.10.0.100) and netfree (unused);
// security groups sg1 (rule r1, used by vm2) and sgfree, in alpha.
func seedNetworks(t testing.TB, s *Server) {
	t.Helper()
	ctx := context.Background()
	repo := s.repo
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []struct{ name, subnet string }{{"net1", "10.10.0.0/24"}, {"netfree", "10.12.0.0/24"}} {
		spec := model.NetworkSpec{Subnet: n.subnet}
		if err := spec.Validate(); err != nil {
			t.Fatal(err)
		}
		must(repo.CreateNetwork(ctx, &model.Network{Meta: model.Meta{Name: n.name, Project: "alpha"}, Spec: spec}))
	}
	for _, g := range []string{"sg1", "sgfree"} {
		must(repo.CreateSecurityGroup(ctx, &model.SecurityGroup{Meta: model.Meta{Name: g, Project: "alpha"},
			Spec: model.SecurityGroupSpec{Rules: []model.Rule{{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22}}}}))
	}
	must(repo.UpdateSecurityGroup(ctx, "alpha", "sg1", func(g *model.SecurityGroup) error { g.Spec.Rules[0].ID = "r1"; return nil }))
	must(repo.AllocateAddress(ctx, "alpha", "net1", "lb/vip", "", "10.10.0.100"))
	must(repo.AllocateAddress(ctx, "alpha", "net1", "vm/vm2/nic0", "0a:00:00:00:00:01", "10.10.0.10"))
	must(repo.UpdateVM(ctx, "alpha", "vm2", func(v *model.VM) error {
		v.Spec.NICs = []model.NIC{{Name: "nic0", Network: "net1", MAC: "0a:00:00:00:00:01", IP: "10.10.0.10", SecurityGroups: []string{"sg1"}}}
		return nil
	}))
}

// networkFuzzSeeds are the hostile values in every field of the network,
// address, security group and NIC bodies.
func networkFuzzSeeds() []fuzzSeed {
	var out []fuzzSeed
	add := func(route string, body string) {
		out = append(out, fuzzSeed{route: route, role: seedMember, body: body}, fuzzSeed{route: route, role: seedAdmin, body: body})
	}
	for _, n := range hostileNumbers {
		add("POST /api/v1/networks", `{"name":"n9","spec":{"subnet":"10.20.0.0/24","mtu":`+n+`}}`)
		add("POST /api/v1/networks", `{"name":"n9","spec":{"subnet":"10.20.0.0/24","mode":"vlan","vlan":`+n+`}}`)
		add("POST /api/v1/secgroups/{name}/rules", `{"direction":"ingress","protocol":"tcp","portMin":`+n+`,"portMax":`+n+`}`)
		add("POST /api/v1/vms/{name}/nics", `{"network":"net1","qos":{"ingressKbps":`+n+`,"egressKbps":`+n+`}}`)
		add("PATCH /api/v1/vms/{name}/nics/{nic}", `{"qos":{"ingressKbps":`+n+`}}`)
	}
	for _, s := range append(hostileStrings, "10.1.0.0/24", "10.10.0.0/16", "0.0.0.0/0", "10.10.0.1", "10.10.0.255", "::1", "fe80::/64", "10.10.0.0/33") {
		q := jsonString(s)
		add("POST /api/v1/networks", `{"name":`+q+`,"spec":{"subnet":"10.21.0.0/24"}}`)
		add("POST /api/v1/networks", `{"name":"n8","spec":{"subnet":`+q+`}}`)
		add("POST /api/v1/networks", `{"name":"n8","spec":{"subnet":"10.22.0.0/24","gateway":`+q+`,"mode":`+q+`}}`)
		add("POST /api/v1/networks/{name}/addresses", `{"owner":`+q+`,"ip":`+q+`}`)
		add("POST /api/v1/secgroups", `{"name":`+q+`,"description":`+q+`}`)
		add("POST /api/v1/secgroups/{name}/rules", `{"direction":`+q+`,"protocol":`+q+`,"cidr":`+q+`,"group":`+q+`}`)
		add("POST /api/v1/vms/{name}/nics", `{"name":`+q+`,"network":`+q+`,"ip":`+q+`,"mac":`+q+`,"securityGroups":[`+q+`]}`)
		add("PATCH /api/v1/vms/{name}/nics/{nic}", `{"securityGroups":[`+q+`]}`)
		for _, route := range []string{"GET /api/v1/networks/{name}", "DELETE /api/v1/networks/{name}/addresses/{ip}", "DELETE /api/v1/secgroups/{name}/rules/{id}",
			"DELETE /api/v1/vms/{name}/nics/{nic}", "GET /api/v1/secgroups/{name}"} {
			out = append(out, fuzzSeed{route: route, role: seedMember, param: s})
		}
	}
	for _, route := range []string{"POST /api/v1/networks", "POST /api/v1/networks/{name}/addresses", "POST /api/v1/secgroups",
		"POST /api/v1/secgroups/{name}/rules", "POST /api/v1/vms/{name}/nics", "PATCH /api/v1/vms/{name}/nics/{nic}"} {
		for _, b := range []string{"null", "", "[]", "{}", "{", `{"z":1}`, strings.Repeat("[", 10000)} {
			add(route, b)
		}
	}
	return out
}
