package netvirt

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// mutations lists the commands of log that change something (not the
// reads Apply makes to observe the host).
func mutations(log []Cmd) []string {
	var out []string
	for _, c := range log {
		s := c.String()
		if strings.Contains(s, "-j") || strings.HasPrefix(s, "sysctl") {
			continue
		}
		out = append(out, s)
	}
	return out
}

func applyFake(t *testing.T, m *Manager, f *Fake, p HostPlan) []string {
	t.Helper()
	f.Log = nil
	if err := m.Apply(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return mutations(f.Log)
}

func TestApplyIsIdempotent(t *testing.T) {
	f := NewFake()
	for _, tap := range []string{"vpaaaa0", "vpbbbb0", "vpcccc0"} {
		f.AddTap(tap)
	}
	m := NewManager(f, &FakeDHCP{}, nil)
	applyFake(t, m, f, samplePlan())
	if got := applyFake(t, m, f, samplePlan()); len(got) != 0 {
		t.Errorf("a second Apply of the same plan changed:\n%s", strings.Join(got, "\n"))
	}
	// A new Manager (an agent restart) adopts the host: it replaces the
	// ruleset once and touches nothing else.
	m2 := NewManager(f, &FakeDHCP{}, nil)
	got := applyFake(t, m2, f, samplePlan())
	for _, c := range got {
		if !strings.HasPrefix(c, "nft -f") && !strings.HasPrefix(c, "tc ") && !strings.HasPrefix(c, "ip link set vpi-") {
			t.Errorf("after a restart Apply ran %q", c)
		}
	}
}

func TestApplyChanges(t *testing.T) {
	a := netip.MustParseAddr
	cases := []struct {
		name   string
		change func(p *HostPlan)
		want   []string // commands that must run (prefix match)
		wantNo []string // commands that must not
	}{
		{"a VM moved to another remote host: its FDB entry follows",
			func(p *HostPlan) {
				p.Networks[0].Remotes = []netip.Addr{a("192.0.2.3")}
				p.Networks[0].FDB = []FDBEntry{{MAC: "52:54:00:00:00:03", Dst: a("192.0.2.3")}}
			},
			[]string{"bridge fdb append 00:00:00:00:00:00 dev vpx-7 dst 192.0.2.3", "bridge fdb replace 52:54:00:00:00:03 dev vpx-7 dst 192.0.2.3",
				"bridge fdb del 00:00:00:00:00:00 dev vpx-7 dst 192.0.2.2"},
			[]string{"nft"}},
		{"a rate changes live: only the class is replaced",
			func(p *HostPlan) { p.Ports[0].IngressKbps, p.Ports[0].EgressKbps = 20000, 30000 },
			[]string{"tc class replace dev vpaaaa0 parent 1: classid 1:1 htb rate 20000kbit", "tc class replace dev vpi-6dfd26d33a parent 1: classid 1:1 htb rate 30000kbit"},
			[]string{"tc qdisc", "ip link add", "nft"}},
		{"rates removed: the qdiscs and the ifb go",
			func(p *HostPlan) { p.Ports[0].IngressKbps, p.Ports[0].EgressKbps = 0, 0 },
			[]string{"tc qdisc del dev vpaaaa0 root", "tc qdisc del dev vpaaaa0 ingress", "ip link del vpi-6dfd26d33a"},
			nil},
		{"a rule is added: one new ruleset",
			func(p *HostPlan) { p.Ports[2].Ingress = []Rule{{Protocol: "udp", PortMin: 53, PortMax: 53}} },
			[]string{"nft -f -"},
			[]string{"ip ", "bridge ", "tc "}},
		{"a network goes: its devices and namespace go",
			func(p *HostPlan) { p.Networks = p.Networks[:1]; p.Ports = p.Ports[:2] },
			[]string{"ip link del vpb-9", "ip link del vpv-9"},
			nil},
		{"the MTU changes: bridge, overlay, gateway and taps follow",
			func(p *HostPlan) { p.Networks[0].MTU = 8950 },
			[]string{"ip link set vpb-7 mtu 8950", "ip link set vpx-7 mtu 8950", "ip -n vpn-7 link set gw address 02:76:70:00:00:07 mtu 8950", "ip link set vpaaaa0 mtu 8950"},
			nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := NewFake()
			for _, tap := range []string{"vpaaaa0", "vpbbbb0", "vpcccc0"} {
				f.AddTap(tap)
			}
			m := NewManager(f, &FakeDHCP{}, nil)
			applyFake(t, m, f, samplePlan())
			p := samplePlan()
			c.change(&p)
			got := applyFake(t, m, f, p)
			for _, w := range c.want {
				if !slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, w) }) {
					t.Errorf("missing %q in:\n%s", w, strings.Join(got, "\n"))
				}
			}
			for _, w := range c.wantNo {
				if i := slices.IndexFunc(got, func(s string) bool { return strings.HasPrefix(s, w) }); i >= 0 {
					t.Errorf("unexpected %q", got[i])
				}
			}
			if again := applyFake(t, m, f, p); len(again) != 0 {
				t.Errorf("not converged after the change:\n%s", strings.Join(again, "\n"))
			}
		})
	}
}

func TestApplyRefusesBadPlans(t *testing.T) {
	f := NewFake()
	m := NewManager(f, nil, nil)
	p := samplePlan()
	p.Ports[0].VNI = 99
	if err := m.Apply(context.Background(), p); !errors.Is(err, ErrPlan) {
		t.Errorf("a port on a missing network: %v, want ErrPlan", err)
	}
	p = samplePlan()
	p.Underlay = netip.Addr{}
	if err := m.Apply(context.Background(), p); !errors.Is(err, ErrPlan) {
		t.Errorf("VXLAN without an underlay: %v, want ErrPlan", err)
	}
	if len(mutations(f.Log)) != 0 {
		t.Errorf("a refused plan ran %v", mutations(f.Log))
	}
}

// TestApplyRulesFirst: a failing ruleset stops Apply before any device
// changes, so no port is ever bridged without its rules.
func TestApplyRulesFirst(t *testing.T) {
	f := NewFake()
	f.AddTap("vpaaaa0")
	f.FailOn = func(c Cmd) error {
		if c.Path == "nft" {
			return errors.New("nft broke")
		}
		return nil
	}
	m := NewManager(f, nil, nil)
	if err := m.Apply(context.Background(), samplePlan()); err == nil {
		t.Fatal("Apply succeeded without its ruleset")
	}
	for _, c := range mutations(f.Log) {
		if !strings.HasPrefix(c, "nft") {
			t.Errorf("ran %q after the ruleset failed", c)
		}
	}
}
