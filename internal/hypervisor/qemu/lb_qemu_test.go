package qemu

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/haproxy"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
	"github.com/vpool/vpool/internal/testenv"
)

// TestGuestsBehindABalancer serves two real guests through vpool's
// load balancer as an agent does: the network's bridge and rules by
// netvirt (the balancer's port and a client's port rendered like NICs:
// anti-spoofing, ingress to the listen port; the members' security
// group admits the member port), HAProxy by haproxy.Runner in its
// namespace on the bridge, the guests by the driver. Each guest serves
// its name over HTTP (busybox httpd on port 8080). Both members get
// connections through the virtual IP; a member whose VM is paused
// (packets vanish, as a hung guest) is marked down within 3 s and every
// connection then goes to the other; resumed, it serves again.
func TestGuestsBehindABalancer(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	g := heavy(t) // one slot for both guests (two slots could deadlock)
	testenv.MustHaveTool(t, "haproxy", "Debian haproxy (scripts/deps.sh)")
	testenv.MustHaveTool(t, "busybox", "Debian busybox")
	exec.Command("ip", "link", "set", "lo", "up").Run()
	ns := os.Getenv(netnsChildEnv)
	mgr := netvirt.NewManager(netvirt.Exec{}, nil, testLogger(t))
	const vni = 78
	a := netip.MustParseAddr
	vip, client := a("10.78.0.100"), a("10.78.0.200")
	lbTap, clTap := netvirt.TapName("h", "test", "lb/web", "vip"), "vqclient"
	type vmDef struct{ name, mac, ip string }
	vms := []vmDef{{"a", "0a:00:00:00:78:0a", "10.78.0.10"}, {"b", "0a:00:00:00:78:0b", "10.78.0.11"}}
	plan := netvirt.HostPlan{Underlay: a("192.0.2.1"), NetnsPrefix: ns + "g-", Networks: []netvirt.NetPlan{{
		VNI: vni, Mode: "vxlan", MTU: 1450, Subnet: netip.MustParsePrefix("10.78.0.0/24"), Gateway: a("10.78.0.1")}}}
	for _, v := range vms {
		plan.Ports = append(plan.Ports, netvirt.Port{Tap: netvirt.TapName("h", "test", v.name, "nic0"), VNI: vni, MAC: v.mac, IP: a(v.ip),
			Ingress: []netvirt.Rule{{Protocol: "tcp", PortMin: 8080, PortMax: 8080}}, OpenEgress: true})
	}
	plan.Ports = append(plan.Ports,
		netvirt.Port{Tap: lbTap, VNI: vni, MAC: "0a:00:00:00:78:64", IP: vip, Ingress: []netvirt.Rule{{Protocol: "tcp", PortMin: 80, PortMax: 80}}, OpenEgress: true},
		netvirt.Port{Tap: clTap, VNI: vni, MAC: "0a:00:00:00:78:c8", IP: client, OpenEgress: true})
	ctx := context.Background()
	mustDo(t, "Apply", mgr.Apply(ctx, plan))
	defer func() {
		if t.Failed() {
			out, _ := exec.Command("sh", "-c", "nft list ruleset; ip -br link").CombinedOutput()
			t.Logf("host state:\n%s", out)
		}
	}()

	// The client: a namespace on the bridge with the port's MAC and address.
	clNS := ns + "-cl"
	for _, c := range [][]string{
		{"netns", "add", clNS},
		{"link", "add", clTap, "mtu", "1450", "type", "veth", "peer", "name", "eth0", "netns", clNS},
		{"link", "set", clTap, "master", netvirt.BridgeName(vni), "up"},
		{"-n", clNS, "link", "set", "eth0", "address", "0a:00:00:00:78:c8", "up"},
		{"-n", clNS, "addr", "add", client.String() + "/24", "dev", "eth0"},
	} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	defer exec.Command("ip", "netns", "del", clNS).Run()

	// The guests, each serving its name.
	cfg := testConfig(t, "")
	cfg.Network = NetBridge
	d := newDriver(t, cfg)
	for _, v := range vms {
		c := vmConfig(g, v.name, "vpool.net=static", "vpool.ip="+v.ip+"/24")
		c.Spec.NICs = []model.NIC{{Name: "nic0", Network: "lan", MAC: v.mac, IP: v.ip}}
		c.Ports = []hypervisor.NICPort{{Tap: netvirt.TapName("h", "test", v.name, "nic0"), Bridge: netvirt.BridgeName(vni), MTU: 1450}}
		mustDo(t, "Create "+v.name, d.Create(ctx, c))
		mustDo(t, "Start "+v.name, d.Start(ctx, c.ID))
	}
	mustDo(t, "Apply after start", mgr.Apply(ctx, plan))
	for _, v := range vms {
		id := "test." + v.name
		wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		_, err := guest.WaitFor(wctx, d.SerialLog(id), "VPOOL-GUEST-NET eth0 "+v.ip)
		cancel()
		if err != nil {
			b, _ := os.ReadFile(d.SerialLog(id))
			t.Fatalf("%s has no network: %v\n%s", v.name, err, tail(string(b), 1500))
		}
		c := openConsole(t, d, id)
		if !c.check("mkdir -p /www && echo member-" + v.name + " >/www/index.html && httpd -p 8080 -h /www") {
			t.Fatalf("httpd did not start in %s", v.name)
		}
	}

	// The balancer, as the agent asks for it.
	lbDir := filepath.Join("/run", ns+"-lb")
	defer os.RemoveAll(lbDir)
	r := &haproxy.Runner{Sys: netvirt.Exec{}, Dir: lbDir, NetnsPrefix: ns + "l-", Log: testLogger(t)}
	check := model.LBSpec{Network: "lan", Listen: 80}
	mustDo(t, "LBSpec", check.Validate())
	spec := haproxy.Spec{ID: "test/web", VNI: vni, Subnet: netip.MustParsePrefix("10.78.0.0/24"), MTU: 1450, Port: lbTap,
		MAC: "0a:00:00:00:78:64", VIP: vip, Listen: 80, MemberPort: 8080, Algorithm: model.LBRoundRobin, Check: check.HealthCheck, Drain: 5 * time.Second}
	for _, v := range vms {
		spec.Members = append(spec.Members, haproxy.Member{Name: v.name, IP: a(v.ip)})
	}
	mustDo(t, "Ensure", r.Ensure(ctx, spec))
	defer func() { _ = r.Remove(context.Background(), spec.ID, lbTap) }()
	health := func() map[string]string {
		st, err := r.Stats(ctx, spec.ID)
		out := map[string]string{}
		if err == nil {
			for n, s := range st {
				out[n] = s.Health
			}
		}
		return out
	}
	waitFor(t, "both members up", 60*time.Second, func() bool { h := health(); return h["a"] == "up" && h["b"] == "up" })

	ask := func() string {
		cmd := exec.Command("ip", "netns", "exec", clNS, "busybox", "nc", "-w", "3", vip.String(), "80")
		cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\n\r\n")
		out, _ := cmd.Output()
		for _, v := range vms {
			if strings.Contains(string(out), "member-"+v.name) {
				return v.name
			}
		}
		return ""
	}
	spread := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			got[ask()]++
		}
		return got
	}
	if got := spread(12); got["a"] < 3 || got["b"] < 3 || got[""] > 0 {
		t.Fatalf("through the balancer: %v, want both members and no failure", got)
	}

	// A hung member: its VM paused, health checks time out.
	start := time.Now()
	mustDo(t, "Pause a", d.Pause(ctx, "test.a"))
	waitFor(t, "a marked down", 10*time.Second, func() bool { return health()["a"] == "down" })
	took := time.Since(start)
	t.Logf("a paused: marked down after %v (bound %v)", took, check.HealthCheck.FailoverBound())
	if took > 3*time.Second {
		t.Errorf("a hung member was marked down after %v, more than 3 s", took)
	}
	if got := spread(8); got["b"] != 8 {
		t.Errorf("with a down: %v, want every connection on b", got)
	}
	mustDo(t, "Resume a", d.Resume(ctx, "test.a"))
	waitFor(t, "a up again", 30*time.Second, func() bool { return health()["a"] == "up" })
	if got := spread(12); got["a"] < 3 || got["b"] < 3 {
		t.Errorf("after a resumed: %v, want both members", got)
	}
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
