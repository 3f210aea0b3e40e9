package netvirt

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tbNet is a network of the testbed: its VMs and their rules.
type tbNet struct {
	vni    int
	subnet string
	mtu    int
	dhcp   bool
	ports  map[string]Port // by VM name; Tap, VNI, MAC, IP are filled in
	leases map[string]string
}

// plans renders every host's plan from the testbed's networks, as the
// agent does from the server's view: a network is on a host when one of
// its VMs is; remotes and FDB entries come from the other hosts' VMs.
func (tb *testbed) plans(nets []*tbNet, groups map[string][]netip.Addr) map[string]HostPlan {
	out := map[string]HostPlan{}
	for hn, h := range tb.hosts {
		p := HostPlan{Underlay: h.underlay, NetnsPrefix: tb.prefix + "g" + hn + "-", Groups: groups}
		for _, n := range nets {
			np := NetPlan{VNI: n.vni, Mode: "vxlan", MTU: n.mtu, DHCP: n.dhcp, Subnet: netip.MustParsePrefix(n.subnet)}
			np.Gateway = np.Subnet.Addr().Next()
			here := false
			remotes := map[netip.Addr]bool{}
			for name, pt := range n.ports {
				v := tb.vms[name]
				if v.host == hn {
					here = true
					pt.Tap, pt.VNI, pt.MAC = v.tap, n.vni, v.mac
					if !pt.IP.IsValid() {
						pt.IP = v.ip
					}
					p.Ports = append(p.Ports, pt)
					np.Leases = append(np.Leases, Lease{MAC: v.mac, IP: pt.IP})
					continue
				}
				rh := tb.hosts[v.host].underlay
				remotes[rh] = true
				np.FDB = append(np.FDB, FDBEntry{MAC: v.mac, Dst: rh})
			}
			for r := range remotes {
				np.Remotes = append(np.Remotes, r)
			}
			if here {
				p.Networks = append(p.Networks, np)
			}
		}
		out[hn] = p
	}
	return out
}

func (tb *testbed) apply(nets []*tbNet, groups map[string][]netip.Addr) {
	tb.t.Helper()
	for hn, p := range tb.plans(nets, groups) {
		if err := tb.hosts[hn].mgr.Apply(context.Background(), p); err != nil {
			tb.t.Fatalf("apply on %s: %v", hn, err)
		}
	}
}

// TestRealTwoHosts proves the rules with real traffic between namespaces
// standing in for VMs on two hosts joined over VXLAN: allowed flows pass,
// denied ones fail, spoofed sources are dropped, another project's
// network (same subnet, same addresses) is unreachable, and removing a
// rule cuts new connections.
func TestRealTwoHosts(t *testing.T) {
	tb := newTestbed(t)
	tb.addHosts(1500, "a", "b")
	tb.addVM("a1", "a", "52:54:00:00:07:01", "10.1.0.10", 24)
	tb.addVM("a2", "a", "52:54:00:00:07:02", "10.1.0.11", 24)
	tb.addVM("b1", "b", "52:54:00:00:07:03", "10.1.0.12", 24)
	// Another project's network reuses the subnet and a1's address.
	tb.addVM("c1", "b", "52:54:00:00:08:01", "10.1.0.10", 24)
	tb.addVM("c2", "a", "52:54:00:00:08:02", "10.1.0.20", 24)
	web := []Rule{{Protocol: "tcp", PortMin: 80, PortMax: 80}}
	n7 := &tbNet{vni: 7, subnet: "10.1.0.0/24", mtu: 1450, ports: map[string]Port{
		"a1": {Ingress: web, OpenEgress: true},
		"a2": {OpenEgress: true},
		"b1": {Ingress: []Rule{{Protocol: "tcp", PortMin: 22, PortMax: 22, Group: "web"}}, OpenEgress: true},
	}}
	n8 := &tbNet{vni: 8, subnet: "10.1.0.0/24", mtu: 1450, ports: map[string]Port{
		"c1": {Ingress: web, OpenEgress: true},
		"c2": {OpenEgress: true},
	}}
	groups := map[string][]netip.Addr{"web": {netip.MustParseAddr("10.1.0.10")}}
	tb.apply([]*tbNet{n7, n8}, groups)
	// Applying the same plan again changes nothing and still works.
	tb.apply([]*tbNet{n7, n8}, groups)

	tb.serve("a1", "10.1.0.10", 80)
	tb.serve("a1", "10.1.0.10", 81)
	tb.serve("b1", "10.1.0.12", 22)
	tb.serve("c1", "10.1.0.10", 80)
	tb.serve("a2", "10.1.0.11", 80)
	flows := []struct {
		name, from, to string
		port           int
		local, want    string
	}{
		{"same host, allowed port", "a2", "10.1.0.10", 80, "", "a1"},
		{"same host, port without a rule", "a2", "10.1.0.10", 81, "", ""},
		{"overlay, allowed port", "b1", "10.1.0.10", 80, "", "a1"},
		{"overlay, peer group member", "a1", "10.1.0.12", 22, "", "b1"},
		{"overlay, not in the peer group", "a2", "10.1.0.12", 22, "", ""},
		{"default deny ingress", "a1", "10.1.0.11", 80, "", ""},
		{"other project's network reaches its own 10.1.0.10", "c2", "10.1.0.10", 80, "", "c1"},
		{"other project's network cannot reach b1", "c2", "10.1.0.12", 22, "", ""},
	}
	for _, f := range flows {
		t.Run(f.name, func(t *testing.T) {
			got := tb.dial(f.from, f.to, f.port, f.local)
			for try := 0; try < 2 && got == "" && f.want != ""; try++ {
				got = tb.dial(f.from, f.to, f.port, f.local) // a busy machine, not a drop
			}
			if got != f.want {
				t.Errorf("%s → %s:%d answered by %q, want %q", f.from, f.to, f.port, got, f.want)
			}
		})
	}

	t.Run("spoofed source address", func(t *testing.T) {
		a2 := tb.vms["a2"]
		sh(t, "ip", "-n", a2.ns, "addr", "add", "10.1.0.99/32", "dev", "eth0")
		if got := tb.dial("a2", "10.1.0.10", 80, "10.1.0.99"); got != "" {
			t.Errorf("a connection from a spoofed address reached %q", got)
		}
		sh(t, "ip", "-n", a2.ns, "addr", "del", "10.1.0.99/32", "dev", "eth0")
		if got := tb.dial("a2", "10.1.0.10", 80, ""); got != "a1" {
			t.Errorf("after the spoof a2 → a1 answered by %q", got)
		}
	})
	t.Run("spoofed source MAC", func(t *testing.T) {
		a2 := tb.vms["a2"]
		sh(t, "ip", "-n", a2.ns, "link", "set", "eth0", "address", "52:54:00:00:07:99")
		sh(t, "ip", "-n", a2.ns, "neigh", "flush", "all")
		got := tb.dial("a2", "10.1.0.10", 80, "")
		sh(t, "ip", "-n", a2.ns, "link", "set", "eth0", "address", a2.mac)
		if got != "" {
			t.Errorf("a frame from a spoofed MAC reached %q", got)
		}
	})
	t.Run("the host is unreachable from its VMs", func(t *testing.T) {
		// The host's underlay address, through the bridge.
		sh(t, "ip", "-n", tb.vms["a2"].ns, "route", "add", "192.0.2.0/24", "via", "10.1.0.1")
		if got := tb.dial("a2", "192.0.2.2", 22, ""); got != "" {
			t.Errorf("a VM reached %q through its host", got)
		}
	})
	t.Run("MTU end to end", func(t *testing.T) {
		a := tb.hosts["a"]
		for _, dev := range []string{BridgeName(7), VXLANName(7), tb.vms["a1"].tap} {
			if got := linkMTU(t, a.ns, dev); got != 1450 {
				t.Errorf("%s MTU %d, want 1450", dev, got)
			}
		}
	})
	t.Run("removing a rule cuts new connections", func(t *testing.T) {
		n7.ports["a1"] = Port{OpenEgress: true}
		tb.apply([]*tbNet{n7, n8}, groups)
		if got := tb.dial("a2", "10.1.0.10", 80, ""); got != "" {
			t.Errorf("after the rule was removed a2 → a1:80 answered by %q", got)
		}
		if got := tb.dial("b1", "10.1.0.10", 80, ""); got != "" {
			t.Errorf("after the rule was removed b1 → a1:80 answered by %q", got)
		}
	})
	t.Run("removing a network removes its devices", func(t *testing.T) {
		tb.apply([]*tbNet{n7}, groups)
		out := sh(t, "ip", "-n", tb.hosts["b"].ns, "link", "show")
		if strings.Contains(out, BridgeName(8)) || strings.Contains(out, VXLANName(8)) {
			t.Errorf("network 8's devices are still on host b:\n%s", out)
		}
	})
}

// TestRealDHCP gets an address, the router and the MTU from the
// network's dnsmasq with busybox udhcpc, on the host of the guest; the
// other host's server (same network) never answers it.
func TestRealDHCP(t *testing.T) {
	tb := newTestbed(t)
	if _, err := LookDnsmasq(); err != nil {
		skipOrFail(t, "%v", err)
	}
	if _, err := exec.LookPath("busybox"); err != nil {
		skipOrFail(t, "busybox (udhcpc) is missing: apt-get install busybox")
	}
	tb.addHosts(1500, "a", "b")
	tb.addVM("d1", "a", "52:54:00:00:09:01", "", 0)
	tb.addVM("d2", "b", "52:54:00:00:09:02", "10.3.0.20", 24)
	n := &tbNet{vni: 9, subnet: "10.3.0.0/24", mtu: 1400, dhcp: true, ports: map[string]Port{
		"d1": {IP: netip.MustParseAddr("10.3.0.10"), OpenEgress: true},
		"d2": {OpenEgress: true},
	}}
	tb.apply([]*tbNet{n}, nil)
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"EVENT=$1 ip=$ip router=$router mtu=$mtu serverid=$serverid\"\n"), 0o755)
	var out []byte
	var err error
	for i := 0; i < 10; i++ { // dnsmasq takes a moment to start
		out, err = exec.Command("ip", "netns", "exec", tb.vms["d1"].ns, "busybox", "udhcpc", "-f", "-q", "-n", "-t", "3", "-T", "1", "-i", "eth0", "-s", script).CombinedOutput()
		if strings.Contains(string(out), "EVENT=bound") {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !strings.Contains(string(out), "EVENT=bound ip=10.3.0.10 router=10.3.0.1 mtu=1400") {
		t.Fatalf("udhcpc did not get the reservation (err %v):\n%s", err, out)
	}
}
