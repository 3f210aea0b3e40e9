package netvirt

import (
	"os/exec"
	"strings"
	"testing"
)

// kernelHasVLAN probes for 802.1Q devices in a scratch namespace.
func kernelHasVLAN(tb *testbed) bool {
	ns := tb.prefix + "-probe"
	sh(tb.t, "ip", "netns", "add", ns)
	defer exec.Command("ip", "netns", "del", ns).Run()
	sh(tb.t, "ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1")
	out, err := exec.Command("ip", "-n", ns, "link", "add", "link", "p0", "name", "p0.5", "type", "vlan", "id", "5").CombinedOutput()
	if err != nil {
		tb.t.Logf("no 802.1Q here: %s", strings.TrimSpace(string(out)))
	}
	return err == nil
}

// TestRealVLAN joins two hosts over a VLAN of their uplink instead of
// VXLAN, where the kernel has 802.1Q (this build machine's has not: the
// rendering is pinned by the golden tests and TestApplyChanges).
func TestRealVLAN(t *testing.T) {
	tb := newTestbed(t)
	if !kernelHasVLAN(tb) {
		t.Skip("this kernel has no 802.1Q VLAN devices (MACHINE.md); VLAN networks are rendered and unit-tested only")
	}
	tb.addHosts(1500, "a", "b")
	tb.addVM("v1", "a", "52:54:00:00:0a:01", "10.8.0.10", 24)
	tb.addVM("v2", "b", "52:54:00:00:0a:02", "10.8.0.11", 24)
	n := &tbNet{vni: 8, subnet: "10.8.0.0/24", mtu: 1500, ports: map[string]Port{
		"v1": {Ingress: []Rule{{Protocol: "tcp"}}, OpenEgress: true},
		"v2": {OpenEgress: true},
	}}
	for hn, p := range tb.plans([]*tbNet{n}, nil) {
		p.Uplink = "eth0"
		p.Networks[0].Mode, p.Networks[0].VLAN = "vlan", 108
		p.Networks[0].Remotes, p.Networks[0].FDB = nil, nil
		if err := tb.hosts[hn].mgr.Apply(t.Context(), p); err != nil {
			t.Fatalf("apply on %s: %v", hn, err)
		}
	}
	tb.serve("v1", "10.8.0.10", 80)
	if got := tb.dial("v2", "10.8.0.10", 80, ""); got != "v1" {
		t.Errorf("v2 → v1 over the VLAN answered by %q", got)
	}
	if got := tb.dial("v1", "10.8.0.11", 80, ""); got != "" {
		t.Errorf("v1 → v2 (no ingress rule) answered by %q", got)
	}
}
