package netvirt

import (
	"context"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update)", err, t.Name())
	}
	if string(want) != got {
		t.Errorf("%s differs from the rendering:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// samplePlan is a host with a VXLAN network (two local NICs, a web and a
// db server, one remote host) and a VLAN network without DHCP.
func samplePlan() HostPlan {
	a := netip.MustParseAddr
	return HostPlan{
		Underlay: a("192.0.2.1"),
		Uplink:   "eth1",
		Networks: []NetPlan{
			{VNI: 7, Mode: "vxlan", MTU: 1450, Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: a("10.1.0.1"), DHCP: true,
				Remotes: []netip.Addr{a("192.0.2.2")},
				FDB:     []FDBEntry{{MAC: "52:54:00:00:00:03", Dst: a("192.0.2.2")}},
				Leases:  []Lease{{MAC: "52:54:00:00:00:01", IP: a("10.1.0.10")}, {MAC: "52:54:00:00:00:02", IP: a("10.1.0.11")}}},
			{VNI: 9, Mode: "vlan", VLAN: 100, MTU: 9000, Subnet: netip.MustParsePrefix("10.2.0.0/16"), Gateway: a("10.2.0.1")},
		},
		Ports: []Port{
			{Tap: "vpaaaa0", VNI: 7, MAC: "52:54:00:00:00:01", IP: a("10.1.0.10"),
				Ingress:     []Rule{{Protocol: "tcp", PortMin: 80, PortMax: 80}, {Protocol: "tcp", PortMin: 8000, PortMax: 8100, CIDR: netip.MustParsePrefix("10.0.0.0/8")}},
				Egress:      []Rule{{Protocol: "tcp", PortMin: 5432, PortMax: 5432, Group: "db"}},
				IngressKbps: 100000, EgressKbps: 50000},
			{Tap: "vpbbbb0", VNI: 7, MAC: "52:54:00:00:00:02", IP: a("10.1.0.11"),
				Ingress: []Rule{{Protocol: "tcp", PortMin: 5432, PortMax: 5432, Group: "web"}, {Protocol: "icmp"}}, OpenEgress: true},
			{Tap: "vpcccc0", VNI: 9, MAC: "52:54:00:00:00:09", IP: a("10.2.0.9"), OpenEgress: true},
		},
		Groups: map[string][]netip.Addr{"db": {a("10.1.0.11")}, "web": {a("10.1.0.10"), a("10.1.0.12")}},
	}
}

func TestRulesetGolden(t *testing.T) {
	golden(t, "ruleset.nft", RenderRuleset(samplePlan()))
}

func TestRulesetEmptyHost(t *testing.T) {
	golden(t, "ruleset-empty.nft", RenderRuleset(HostPlan{}))
}

func TestDnsmasqGolden(t *testing.T) {
	n := samplePlan().Networks[0]
	c := dhcpConfig(n, "vpn-7")
	golden(t, "dnsmasq.conf", RenderDnsmasqConf(c, "/run/vpool/dhcp")+"--- hosts\n"+RenderDHCPHosts(c.Leases))
}

// TestApplyFromScratchGolden pins every command a first Apply runs on a
// host whose taps exist.
func TestApplyFromScratchGolden(t *testing.T) {
	f := NewFake()
	for _, tap := range []string{"vpaaaa0", "vpbbbb0", "vpcccc0"} {
		f.AddTap(tap)
	}
	m := NewManager(f, &FakeDHCP{}, nil)
	if err := m.Apply(context.Background(), samplePlan()); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, c := range f.Log {
		b.WriteString(c.String() + "\n")
	}
	golden(t, "apply-scratch.cmds", b.String())
}
