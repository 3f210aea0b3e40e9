package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
)

func TestBuildPlan(t *testing.T) {
	a := &Agent{cfg: Config{HostName: "h1", Net: &NetConfig{Overlay: "192.0.2.1", UnderlayMTU: 1500}}}
	spec := func(subnet string, mtu int) model.NetworkSpec {
		s := model.NetworkSpec{Subnet: subnet, MTU: mtu}
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	v := &api.HostNetworks{
		Networks: []api.NetworkView{
			{Project: "p", Name: "lan", VNI: 7, Spec: spec("10.1.0.0/24", 1450), Remotes: []string{"192.0.2.2"},
				FDB: []api.FDBEntry{{MAC: "0a:00:00:00:00:09", Host: "192.0.2.2"}}},
			{Project: "p", Name: "jumbo", VNI: 8, Spec: spec("10.2.0.0/24", 8950)}, // needs a 9000 underlay
		},
		NICs: []api.NICView{
			{Project: "p", VM: "web", NIC: "nic0", VNI: 7, MAC: "0a:00:00:00:00:01", IP: "10.1.0.10", Groups: []string{"web"},
				QoS: model.NICQoS{IngressKbps: 1000}},
			{Project: "p", VM: "open", NIC: "nic0", VNI: 7, MAC: "0a:00:00:00:00:02", IP: "10.1.0.11"},
			{Project: "p", VM: "big", NIC: "nic0", VNI: 8, MAC: "0a:00:00:00:00:03", IP: "10.2.0.10"},
		},
		Groups: []api.GroupView{
			{Project: "p", Name: "web", Members: []string{"10.1.0.10"}, Rules: []model.Rule{
				{Direction: "ingress", Protocol: "tcp", PortMin: 80, PortMax: 80},
				{Direction: "egress", Protocol: "tcp", PortMin: 5432, PortMax: 5432, Group: "db"},
				{Direction: "ingress", Protocol: "any", CIDR: "10.9.0.0/16"},
			}},
			{Project: "p", Name: "db", Members: []string{"10.1.0.20"}},
		},
	}
	plan, err := a.buildPlan(v)
	if err == nil || !strings.Contains(err.Error(), "underlay MTU of 1500") {
		t.Errorf("a jumbo network over a 1500 underlay: %v, want a refusal naming the MTU", err)
	}
	if len(plan.Networks) != 1 || plan.Networks[0].VNI != 7 || len(plan.Ports) != 2 {
		t.Fatalf("plan: %+v", plan)
	}
	n := plan.Networks[0]
	if n.MTU != 1450 || !n.DHCP || n.Gateway != netip.MustParseAddr("10.1.0.1") || len(n.Remotes) != 1 || len(n.FDB) != 1 || len(n.Leases) != 2 {
		t.Errorf("network: %+v", n)
	}
	var web, open netvirt.Port
	for _, p := range plan.Ports {
		switch p.Tap {
		case netvirt.TapName("h1", "p", "web", "nic0"):
			web = p
		case netvirt.TapName("h1", "p", "open", "nic0"):
			open = p
		}
	}
	if web.OpenEgress || len(web.Ingress) != 2 || len(web.Egress) != 1 || web.Egress[0].Group != "p/db" || web.IngressKbps != 1000 ||
		web.Ingress[1].CIDR != netip.MustParsePrefix("10.9.0.0/16") {
		t.Errorf("web's port: %+v", web)
	}
	if !open.OpenEgress || len(open.Ingress) != 0 {
		t.Errorf("a NIC in no group: %+v", open)
	}
	if got := plan.Groups["p/db"]; len(got) != 1 || got[0] != netip.MustParseAddr("10.1.0.20") {
		t.Errorf("peer group db: %v", got)
	}
	// The plan is consistent: netvirt accepts it.
	if err := netvirt.NewManager(netvirt.NewFake(), nil, nil).Apply(t.Context(), plan); err != nil {
		t.Errorf("netvirt refused the plan: %v", err)
	}
}

func TestNICPortsWaitForTheNetwork(t *testing.T) {
	a := &Agent{cfg: Config{HostName: "h1"}}
	vm := &model.VM{Meta: model.Meta{Name: "web", Project: "p"}, Spec: model.VMSpec{NICs: []model.NIC{{Name: "nic0", Network: "lan", IP: "10.1.0.10"}}}}
	if _, err := a.nicPorts(vm); err == nil || !strings.Contains(err.Error(), "serves none") {
		t.Errorf("a vpool NIC on a host without networks: %v", err)
	}
	legacy := &model.VM{Spec: model.VMSpec{NICs: []model.NIC{{Name: "nic0", Network: "lan"}}}}
	if ports, err := a.nicPorts(legacy); err != nil || ports != nil {
		t.Errorf("a host-network NIC: %v %v", ports, err)
	}
	a.cfg.Net = &NetConfig{Overlay: "192.0.2.1"}
	s := model.NetworkSpec{Subnet: "10.1.0.0/24"}
	s.Validate()
	a.net.view = &api.HostNetworks{ETag: "e", Networks: []api.NetworkView{{Project: "p", Name: "lan", VNI: 7, Spec: s}},
		NICs: []api.NICView{{Project: "p", VM: "web", NIC: "nic0", VNI: 7, IP: "10.1.0.10"}}}
	a.net.applied = "e"
	ports, err := a.nicPorts(vm)
	if err != nil || len(ports) != 1 || ports[0].Bridge != "vpb-7" || ports[0].Address != "10.1.0.10/24" || !ports[0].DHCP || ports[0].MTU != 1450 {
		t.Errorf("ports: %+v %v", ports, err)
	}
}
