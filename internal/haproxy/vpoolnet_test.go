package haproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
	"github.com/vpool/vpool/internal/testenv"
)

// TestBalancerOnAVpoolNetwork serves a balancer on a network that
// netvirt renders with its real rules (anti-spoofing, default deny
// ingress, conntrack), as an agent does: the balancer's port and a
// client's are ports like NICs (the balancer's admits its listen port),
// and three members stand in namespaces. Members whose security group
// admits the member port get the traffic; one whose group does not is
// marked down by the health checks and gets none (vpool does not open
// members' groups for their balancers); the client reaches the virtual
// IP, and a member only where its group lets it.
func TestBalancerOnAVpoolNetwork(t *testing.T) {
	testenv.MustHaveRoot(t, "network namespaces and nftables")
	testenv.MustHaveTool(t, "ip", "Debian iproute2")
	testenv.MustHaveTool(t, "nft", "Debian nftables")
	testenv.MustHaveTool(t, "haproxy", "Debian haproxy (scripts/deps.sh)")
	var r [3]byte
	_, _ = rand.Read(r[:])
	p := "vt" + hex.EncodeToString(r[:])
	bd := &bed{t: t, prefix: p, host: p + "-h", lis: map[string]net.Listener{}, members: []string{"m1", "m2", "m3"}}
	t.Cleanup(bd.close)
	sh(t, "ip", "netns", "add", bd.host)
	sh(t, "ip", "-n", bd.host, "link", "set", "lo", "up")

	a := netip.MustParseAddr
	open8080 := []netvirt.Rule{{Protocol: "tcp", PortMin: 8080, PortMax: 8080}}
	type port struct {
		name, mac, ip string
		ingress       []netvirt.Rule
	}
	ports := []port{
		{"m1", "0a:00:00:00:07:0b", "10.77.0.11", open8080},
		{"m2", "0a:00:00:00:07:0c", "10.77.0.12", open8080},
		{"m3", "0a:00:00:00:07:0d", "10.77.0.13", nil}, // its group does not admit the balancer
		{"client", "0a:00:00:00:07:c8", "10.77.0.200", nil},
	}
	plan := netvirt.HostPlan{Underlay: a("192.0.2.1"), NetnsPrefix: p + "-g", Networks: []netvirt.NetPlan{{
		VNI: bedVNI, Mode: "vxlan", MTU: 1450, Subnet: netip.MustParsePrefix("10.77.0.0/24"), Gateway: a("10.77.0.1")}}}
	for _, pt := range ports {
		plan.Ports = append(plan.Ports, netvirt.Port{Tap: "t" + pt.name, VNI: bedVNI, MAC: pt.mac, IP: a(pt.ip), Ingress: pt.ingress, OpenEgress: true})
	}
	s := bd.spec(model.LBRoundRobin)
	s.MTU = 1450
	plan.Ports = append(plan.Ports, netvirt.Port{Tap: s.Port, VNI: bedVNI, MAC: s.MAC, IP: s.VIP,
		Ingress: []netvirt.Rule{{Protocol: "tcp", PortMin: s.Listen, PortMax: s.Listen}}, OpenEgress: true})
	mgr := netvirt.NewManager(netvirt.Exec{Netns: bd.host}, nil, nil)
	ctx := context.Background()
	if err := mgr.Apply(ctx, plan); err != nil {
		t.Fatal(err)
	}
	for _, pt := range ports {
		ns := p + "-" + pt.name
		sh(t, "ip", "netns", "add", ns)
		sh(t, "ip", "-n", bd.host, "link", "add", "t"+pt.name, "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", ns)
		sh(t, "ip", "-n", bd.host, "link", "set", "t"+pt.name, "master", netvirt.BridgeName(bedVNI), "up")
		sh(t, "ip", "-n", ns, "link", "set", "eth0", "address", pt.mac, "up")
		sh(t, "ip", "-n", ns, "addr", "add", pt.ip+"/24", "dev", "eth0")
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
		if pt.name != "client" {
			bd.serve(pt.name, pt.ip)
		}
	}
	dir, err := os.MkdirTemp("/run", p+"-lb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bd.runner = bd.newRunner(dir)
	t.Cleanup(func() { bd.runner.Shutdown() })
	bd.ensure(s)
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, err := bd.runner.Stats(ctx, s.ID)
		if err == nil && st["m1"].Health == "up" && st["m2"].Health == "up" && st["m3"].Health == "down" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want m1, m2 up and m3 down (its group refuses the balancer): %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := map[string]int{}
	for range 20 {
		got[bd.ask("")]++
	}
	if got["m1"] < 5 || got["m2"] < 5 || got["m3"] > 0 || got[""] > 0 {
		t.Fatalf("through the balancer: %v, want m1 and m2 only, no failure", got)
	}
	for _, tc := range []struct {
		to   string
		want bool
	}{{"10.77.0.11", true}, {"10.77.0.13", false}} {
		c, _, err := bd.clientConn(tc.to, 8080, "")
		if err == nil {
			c.Close()
		}
		if (err == nil) != tc.want {
			t.Errorf("client to %s:8080 directly: %v, want reachable %v", tc.to, err, tc.want)
		}
	}
	t.Logf("through the balancer on a vpool network: %v", fmt.Sprint(got))
}
